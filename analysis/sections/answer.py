"""The answer a user came for, first: each method's score with its interval and its difference to full
fine-tuning, what it cost (training time, exact memory, adapter size on disk), which methods this
sweep cannot tell apart from full FT, the cheapest of those, and how small a difference it could see."""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from analysis.cells import Cell, find, is_fraction
from analysis.document import Section
from analysis.sections.memory import MB, ledger_row
from analysis.sections.results import metric_label, paired_text


def _median(runs: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(runs.get(column, pd.Series(dtype=float)), errors="coerce").dropna()
    return float(values.median()) if len(values) else None


def _artifact(cell: Cell) -> str:
    if cell.method == "full":
        weights = [c for c in cell.runs if c.startswith("memory.weights.")]
        total = cell.runs[weights].sum(axis=1).median() if weights else None
        return f"the whole model: {total / MB:.1f} MB" if total else "the whole model"
    size = _median(cell.runs, "adapter_bytes_on_disk")
    return f"{size / MB:.2f} MB" if size else "–"


def rows(cells: list[Cell], full: Cell | None) -> pd.DataFrame:
    out = []
    for cell in cells:
        if cell.lr is None:
            continue
        ledger = ledger_row(cell)
        seconds = _median(cell.learned, "timing.train_seconds")
        out.append({"Method": cell.label, "Score": cell.score_text(),
                    "Difference to full FT": "reference" if cell is full else paired_text(cell, full),
                    "Training time, s (median)": f"{seconds:.0f}" if seconds else "–",
                    "Memory ledger, MB": f"{ledger['Ledger total']:.1f}" if ledger else "–",
                    "Artifact on disk": _artifact(cell)})
    return pd.DataFrame(out)


def verdict(cells: list[Cell], full: Cell | None) -> str:
    """Which methods the sweep cannot tell from full FT, the cheapest of them by the ledger, and which
    it could not test."""
    if full is None or full.lr is None:
        return "No full fine-tuning cell to compare against."
    tested = {c.label: (c, stats.difference(c.scores(), full.scores()).holds_zero)
              for c in cells if c is not full and c.lr is not None}
    same = [c for c, holds in tested.values() if holds]
    untested = [label for label, (_, holds) in tested.items() if holds is None]
    differs = [label for label, (_, holds) in tested.items() if holds is False]
    parts = []
    if same:
        cheapest = min(same + [full], key=lambda c: (ledger_row(c) or {}).get("Ledger total") or math.inf)
        parts.append(f"This sweep cannot tell {', '.join(c.label for c in same)} from full fine-tuning (the 95% "
                     "interval of each difference holds 0; that is not evidence they are equal: see the power line). "
                     f"Cheapest among them by the memory ledger: **{cheapest.label}**.")
    if differs:
        parts.append(f"Different from full fine-tuning (the interval excludes 0): {', '.join(differs)}.")
    if untested:
        parts.append(f"Too few seeds to test: {', '.join(untested)}.")
    return " ".join(parts)


def power_line(cells: list[Cell], runs: pd.DataFrame) -> str | None:
    """The smallest difference this sweep could detect, and what would shrink it."""
    test_rows = pd.to_numeric(runs.get("splits.test", pd.Series(dtype=float)), errors="coerce").dropna()
    scored = [c for c in cells if len(c.scores()) >= 2]
    if not len(test_rows) or not scored or not is_fraction(scored[0].metric):
        return None
    seeds = min(len(c.scores()) for c in scored)
    spread = pd.Series([pd.Series(list(c.scores().values())).std() for c in scored]).median() / 100
    mean = pd.Series([c.estimate().value for c in scored]).mean() / 100
    rows_n = int(test_rows.iloc[0])
    now = 100 * stats.detectable_difference(mean, rows_n, seeds, spread)
    more_seeds = 100 * stats.detectable_difference(mean, rows_n, 4 * seeds, spread)
    bigger_test = 100 * stats.detectable_difference(mean, 4 * rows_n, seeds, spread)
    return (f"**Power:** with {seeds} seeds per method, a {rows_n:,}-row test split and a seed-to-seed spread of "
            f"{100 * spread:.2f} points, a true difference smaller than **{now:.1f} points** would be missed more "
            f"than one time in five (two-sided 5% test, 80% power). Four times the seeds (`seed=...`) would bring "
            f"that to {more_seeds:.1f} points; four times the test rows (`dataset.sizes.test={4 * rows_n}`, if the "
            f"file has them) to {bigger_test:.1f}.")


def section(cells: list[Cell], runs: pd.DataFrame, metric: str) -> Section:
    full = find(cells, "full")
    out = Section("The answer")
    out.table(rows(cells, full), f"{metric_label(metric)}: mean and 95% t interval over the seeds whose runs learned, "
                                 "at each cell's learning rate (chosen on validation where several were tried); "
                                 "differences by paired t (Welch where seeds differ). Memory: the exact ledger of one "
                                 "training step; MB = 1e6 bytes.")
    out.text(verdict(cells, full))
    line = power_line(cells, runs)
    if line:
        out.text(line)
    return out
