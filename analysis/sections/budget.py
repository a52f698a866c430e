"""The training budget: whether each reported run trained until its loss stopped falling (the
record's `convergence`, lab/convergence.py), cells that did not flagged, and validation score against
steps per method, so a reader sees whether the ranking depends on the budget."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import cells as cellmod  # noqa: E402
from analysis import figures  # noqa: E402
from analysis.cells import METHOD_COLOURS, Cell  # noqa: E402
from analysis.document import Section  # noqa: E402

# Points of the budget at which the ranking is read: shares of the longest reported run's steps.
BUDGET_POINTS = (0.25, 0.5, 0.75, 1.0)
RULE = ("A run converged when early stopping ended it (the validation loss had not improved for its patience) or its "
        "best evaluation lies further back than its patience; without evaluations, when its training loss fell "
        "by at most 10 % of its whole drop over the last fifth of its steps (least-squares slope; "
        "lab/convergence.py). Only the reported runs (the chosen learning rate, the reported seeds) are judged.")


def _convergence(run: pd.Series) -> dict | None:
    """The record's `convergence` entry (flattened into `convergence.*` columns by analysis.collect)."""
    entry = {key.removeprefix("convergence."): value for key, value in run.items() if key.startswith("convergence.")}
    entry = {key: (None if not isinstance(value, (list, dict)) and pd.isna(value) else value)
             for key, value in entry.items()}
    return entry if entry.get("steps") is not None else None


def table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        # Every reported run at the chosen rate, a collapsed one too: a budget too short may be why.
        judged = [c for c in map(_convergence, (r for _, r in cell.chosen_runs.iterrows())) if c is not None]
        if not judged:
            continue
        missed = [c for c in judged if c.get("converged") is False]
        slopes = [c["slope_per_10_steps"] for c in judged if c.get("slope_per_10_steps") is not None]
        rows.append({"Cell": cell.label, "Runs": len(judged),
                     "Converged": sum(c.get("converged") is True for c in judged),
                     "Stopped early": sum(bool(c.get("stopped_early")) for c in judged),
                     "Steps (median)": int(pd.Series([c["steps"] for c in judged]).median()),
                     "Train-loss slope per 10 steps, last fifth (median)":
                         f"{pd.Series(slopes).median():+.4f}" if slopes else "–",
                     "Flag": f"NOT CONVERGED: {len(missed)} of {len(judged)} runs still improving at the end"
                             if missed else ""})
    return pd.DataFrame(rows)


def _evaluations(cell: Cell, metric: str) -> list[list[tuple[int, float]]]:
    """Each reported run's (step, validation score) points inside training."""
    out = []
    for curve in cell.learned.get("curve", pd.Series(dtype=object)):
        if isinstance(curve, list):
            points = [(p["step"], cellmod.scaled(p[f"eval_{metric}"], metric)) for p in curve if f"eval_{metric}" in p]
            if points:
                out.append(points)
    return out


def _finals(cell: Cell, metric: str) -> list[float | None]:
    """Each reported run's final validation score: the model it ended with (the best checkpoint under
    early stopping), which is what a run that stopped earlier offers at any later budget."""
    column = f"metrics.validation_{metric}"
    out = []
    for curve, final in zip(cell.learned.get("curve", pd.Series(dtype=object)),
                            cell.learned.get(column, pd.Series(dtype=float))):
        if isinstance(curve, list) and any(f"eval_{metric}" in p for p in curve):
            out.append(None if pd.isna(final) else cellmod.scaled(final, metric))
    return out


def budget_table(cells: list[Cell], metric: str) -> pd.DataFrame:
    """Mean validation score per cell at shares of the budget: each run's last evaluation at or before
    each point, and past its end the model it ended with (the best checkpoint, for a run that stopped)."""
    runs = {cell.label: (_evaluations(cell, metric), _finals(cell, metric)) for cell in cells}
    longest = max((p[-1][0] for points, _ in runs.values() for p in points), default=0)
    if not longest:
        return pd.DataFrame()
    rows = []
    for label, (points, finals) in runs.items():
        if not points:
            continue
        row = {"Cell": label}
        for share in BUDGET_POINTS:
            step = round(share * longest)
            scores = [final if step >= p[-1][0] else ([v for s, v in p if s <= step] or [None])[-1]
                      for p, final in zip(points, finals)]
            kept = [v for v in scores if v is not None]
            row[f"step {step}"] = f"{sum(kept) / len(kept):.2f}" if kept else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def plot(cells: list[Cell], metric: str, folder: str) -> str | None:
    drawn = [(cell, _evaluations(cell, metric)) for cell in cells]
    drawn = [(cell, points) for cell, points in drawn if points]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cell, runs in drawn:
        colour = METHOD_COLOURS.get(cell.method, "grey")
        for i, points in enumerate(runs):
            ax.plot([s for s, _ in points], [v for _, v in points], color=colour, linewidth=1, alpha=0.8,
                    label=cell.label if i == 0 else None)
    ax.set(xlabel="training step", ylabel=f"validation {metric}" + (" (%)" if cellmod.is_fraction(metric) else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save(fig, folder, "validation_by_step.png")


def section(cells: list[Cell], metric: str, folder: str) -> Section | None:
    """The convergence table and the validation-by-step figure; None when no run recorded convergence."""
    flags = table(cells)
    if not len(flags):
        return None
    out = Section("Training budget and convergence").text(RULE)
    missed = flags[flags["Flag"] != ""]
    if len(missed):
        out.text("**Not converged:** " + "; ".join(missed["Cell"]) + ". Their scores describe the budget, not the "
                 "method: a longer cap may change the ranking.")
    else:
        out.text("Every reported run converged under the length rule.")
    out.table(flags, "Convergence of the reported runs per cell.")
    validation = cellmod.selection_metric(metric).removeprefix("validation_")
    by_budget = budget_table(cells, validation)
    if len(by_budget):
        out.table(by_budget, f"Mean validation {validation} of the reported runs at shares of the longest run's "
                             "steps: does the ranking hold at every budget?")
    name = plot(cells, validation, folder)
    if name:
        out.figure(name, f"Validation {validation} against training step, each reported run in its method's colour.")
    return out
