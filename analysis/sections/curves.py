"""Train-loss curves per cell: a run that learned nothing is obvious at a glance."""

from __future__ import annotations

import pandas as pd

from analysis import figures
from analysis.cells import Cell
from analysis.document import Section


def section(cells: list[Cell], runs: pd.DataFrame, folder: str) -> Section | None:
    floors = runs.get("health_detail.label_entropy", pd.Series(dtype=float)).dropna()
    floor = float(floors.median()) if len(floors) else None
    name = figures.curves_plot(cells, floor, folder)
    if name is None:
        return None
    where = f"; dotted: the training labels' entropy ({floor:.3f} nats), where a model that learned nothing sits" \
        if floor is not None else ""
    return Section("Training curves").figure(
        name, "Train loss against step per cell: the runs at the chosen learning rate in the method's colour, "
              f"collapsed runs (any learning rate) dashed grey{where}.")
