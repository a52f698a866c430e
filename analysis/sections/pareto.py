"""Score against cost, the Pareto frontier marked: adapter parameters, and the ledger's total bytes.

A point is a cell at its chosen learning rate (runs that learned only); it is on the frontier when
no other point costs no more and scores at least as well, one of the two strictly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import figures
from analysis.cells import Cell, higher_is_better
from analysis.document import Section
from analysis.sections.memory import ledger_row
from analysis.sections.results import adapter_params, metric_label

COSTS = [("adapter_params", "trainable adapter parameters (log scale; full FT: all)", "log"),
         ("ledger_mb", "ledger total, MB (1e6 bytes)", "linear")]


def frontier(costs, scores, higher: bool = True) -> np.ndarray:
    """A boolean mask of the points no other point dominates (cost no higher, score no worse, one strictly)."""
    cost = np.asarray(costs, dtype=float)
    score = np.asarray(scores, dtype=float) * (1 if higher else -1)
    on = np.zeros(len(cost), dtype=bool)
    for i in range(len(cost)):
        if np.isnan(cost[i]) or np.isnan(score[i]):
            continue
        no_worse = (cost <= cost[i]) & (score >= score[i])
        better = (cost < cost[i]) | (score > score[i])
        on[i] = not np.any(no_worse & better)
    return on


def points(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        if not cell.scores():
            continue
        ledger = ledger_row(cell)
        params = cell.runs["params.total"].dropna().iloc[0] if cell.method == "full" else adapter_params(cell)
        rows.append({"method": cell.method, "method_label": cell.method_label, "label": cell.label, "lr": cell.lr, "mean": cell.estimate().value,
                     "n": len(cell.scores()), "adapter_params": params,
                     "ledger_mb": ledger["Ledger total"] if ledger else None})
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    higher = higher_is_better(cells[0].metric)
    return frame.assign(**{f"frontier_{cost}": frontier(frame[cost].astype(float), frame["mean"], higher)
                           for cost, _, _ in COSTS})


def section(cells: list[Cell], metric: str, folder: str) -> Section | None:
    frame = points(cells)
    if not len(frame):
        return None
    out = Section("Accuracy against cost")
    out.figure(figures.pareto_plot(frame, metric_label(metric), COSTS, folder),
               "Each cell at its chosen learning rate (mean over runs that learned) against adapter parameters and "
               "against the ledger's total bytes; the dashed line joins the Pareto frontier.")
    shown = frame.assign(ledger_mb=frame["ledger_mb"].round(2), mean=frame["mean"].round(2))
    out.table(shown.drop(columns=["method"]).rename(columns={"label": "Cell", "mean": metric_label(metric)}),
              "The points and whether each is on the frontier for that cost.")
    return out
