"""Each cell's learning rates on the validation split: what was tried, what was chosen, and whether
the choice is bracketed (a worse value on both sides) or sits on the grid's edge."""

from __future__ import annotations

import pandas as pd

from analysis import cells as cellmod
from analysis.cells import Cell
from analysis.document import Section

RULE = ("Per cell, the learning rate with the best mean validation score over the seeds every rate ran, among "
        "rates none of whose runs failed or collapsed (lab/selection.py; the sweeper extends the grid by the "
        "same rule). A choice on the edge of its grid is flagged: the optimum may lie outside it.")


def _tried(cell: Cell) -> str:
    parts = []
    tuning = cellmod.split_roles(cell.runs)[0]
    for lr in cell.choice.values:
        mean = cell.choice.means.get(lr)
        runs = tuning[tuning["lr"] == lr]
        collapsed = int((runs["health"] == "collapsed").sum())
        text = f"{lr:g}: " + (f"{cellmod.scaled(mean, cell.metric):.2f}" if mean is not None else "not eligible")
        text += f" ({len(runs)} runs" + (f", {collapsed} collapsed)" if collapsed else ")")
        parts.append(f"**{text}**" if lr == cell.lr else text)
    return "; ".join(parts)


def table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        if not cell.tuned:
            continue
        edge = cell.choice.edge
        rows.append({"Cell": cell.label, "Chosen lr": f"{cell.lr:g}" if cell.lr else "none",
                     "Bracketed": "no: on the " + edge + " edge" if edge else ("yes" if cell.lr else "–"),
                     "Validation mean per lr tried": _tried(cell)})
    return pd.DataFrame(rows)


def extension_cost(runs: pd.DataFrame, sweep: dict | None) -> str | None:
    """What the sweeper's bracketing and confirming rounds added, in runs."""
    if not sweep or "unbracketed" not in sweep:
        return None
    first_round = sweep.get("grid_jobs")
    total = len(sweep.get("jobs", []))
    text = f"The sweep ran {total} jobs"
    if first_round:
        text += f": {first_round} in its grid and {total - first_round} added to bracket and confirm the choices"
    left = sweep["unbracketed"]
    return text + (". Every choice is bracketed." if not left else f". Still on an edge: {'; '.join(left)}.")


def section(cells: list[Cell], runs: pd.DataFrame, sweep: dict | None) -> Section | None:
    frame = table(cells)
    if not len(frame):
        return None
    out = Section("Learning rates chosen on validation").text(RULE)
    if "role" in runs and runs["role"].eq("tune").any():
        tuning = sorted(runs.loc[runs["role"] == "tune", "seed"].dropna().astype(int).unique())
        reported = sorted(runs.loc[runs["role"] == "report", "seed"].dropna().astype(int).unique())
        out.text(f"Chosen at the tuning seeds {', '.join(map(str, tuning))} alone (runs counted below); every score "
                 f"this report shows comes from the other seeds ({', '.join(map(str, reported))}), at the chosen rate.")
    out.table(frame, "Validation score (points) per learning rate tried; the chosen one in bold.")
    cost = extension_cost(runs, sweep)
    if cost:
        out.text(cost)
    return out
