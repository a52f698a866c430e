"""The answer a user came for, first: each method's score, its seed-to-seed spread and its difference to
full fine-tuning, what it cost (training time, exact memory, adapter size on disk); the cheapest cell by
the memory ledger that is non-inferior to full fine-tuning at the declared margin (never one that fails
the test); and, where a comparison is undecided, how many seeds or test rows would decide it."""

from __future__ import annotations

import math

import pandas as pd

from analysis.cells import Cell, difference_bounds, find
from analysis.document import Section
from analysis.rules import NON_INFERIORITY, Judged, Rules, p_text
from analysis.sections.memory import MB, ledger_row
from analysis.sections.results import DIFFERENCES, metric_label, paired_text, seed_sd_text


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


def _ledger(cell: Cell) -> float:
    return (ledger_row(cell) or {}).get("Ledger total") or math.inf


def judged(cells: list[Cell], full: Cell | None, rules: Rules) -> dict[str, tuple[Cell, Judged]]:
    """Every cell against full FT by non-inferiority, one family (Holm)."""
    if full is None or full.lr is None:
        return {}
    others = [c for c in cells if c is not full and c.lr is not None]
    return {c.label: (c, j) for c, j in zip(others, rules.family([c.compare(full) for c in others], NON_INFERIORITY))}


def _bound_text(j: Judged, rules: Rules) -> str:
    if j.verdict == "untested":
        return "untested (too few seeds)"
    low = j.comparison.interval(rules.interval_level(NON_INFERIORITY))[0]
    return f"{j.verdict}: bound {low:+.2f}, Holm p {p_text(j.p_holm)}"


def rows(cells: list[Cell], full: Cell | None, rules: Rules) -> pd.DataFrame:
    tests = judged(cells, full, rules)
    out = []
    for cell in cells:
        if cell.lr is None:
            continue
        ledger = ledger_row(cell)
        seconds = _median(cell.learned, "timing.train_seconds")
        test = tests.get(cell.label)
        out.append({"Method": cell.label, "Score": cell.score_text(), "Seed SD": seed_sd_text(cell),
                    "Difference to full FT": "reference" if cell is full else paired_text(cell, full),
                    f"Non-inferior at −{rules.margin:g}?": "reference" if cell is full else
                    (_bound_text(test[1], rules) if test else "–"),
                    "Training time, s (median)": f"{seconds:.0f}" if seconds else "–",
                    "Memory ledger, MB": f"{ledger['Ledger total']:.1f}" if ledger else "–",
                    "Artifact on disk": _artifact(cell)})
    return pd.DataFrame(out)


def recommendation(cells: list[Cell], full: Cell | None, rules: Rules) -> str:
    """The cheapest cell that passes non-inferiority, or that none does; never a cell that fails."""
    if full is None or full.lr is None:
        return "No full fine-tuning cell to compare against: no recommendation."
    tests = judged(cells, full, rules)
    passed = [c for c, j in tests.values() if j.verdict == "competitive"]
    cheaper = [c for c in passed if _ledger(c) < _ledger(full)]
    head = (f"Rule: a cell is recommended only if it is non-inferior to full fine-tuning at −{rules.margin:g} "
            f"{rules.unit} "
            f"(one-sided 95% lower bound of the difference above −{rules.margin:g}, Holm across the {len(tests)} "
            "cells), and among those the cheapest by the exact memory ledger.")
    if not passed:
        return head + (" **No cell passes**: this sweep cannot recommend a cheaper method than full fine-tuning at "
                       "this margin. The sample-size table below says what would decide each comparison.")
    named = ", ".join(c.label for c in passed)
    if not cheaper:
        return head + f" Non-inferior: {named}; none is cheaper than full fine-tuning by the ledger."
    best = min(cheaper, key=_ledger)
    return head + f" Non-inferior: {named}. **Recommended: {best.label}** ({_ledger(best) / MB:.1f} MB by the ledger)."


def fallback_note(cells: list[Cell], full: Cell | None, rules: Rules) -> str | None:
    """Say so where a difference could not be paired on the test rows."""
    seed_only = [label for label, (_, j) in judged(cells, full, rules).items() if j.comparison.rows == 0]
    if not seed_only:
        return None
    named = "any cell" if len(seed_only) == len(judged(cells, full, rules)) else ", ".join(seed_only)
    return (f"No per-row outputs for {named} (records written before runs kept them, or a rows file "
            "that no longer matches its record): their differences are the seed-paired t test, whose interval answers "
            "another training seed only; the test split's own noise is not in it.")


def _count(value: float, now: int, unit: str) -> str:
    if math.isinf(value):
        return "none would: the observed difference is at or below −margin"
    need = max(math.ceil(value), 2)
    return f"{need:,} {unit}" + (" (as many as now or fewer: the test is near its edge)" if need <= now else "")


def sample_sizes(cells: list[Cell], full: Cell | None, rules: Rules) -> pd.DataFrame:
    """Per undecided comparison: seeds, or test rows, that non-inferiority would need at 80% power."""
    out = []
    for label, (cell, j) in judged(cells, full, rules).items():
        if j.verdict in ("competitive", "untested"):
            continue
        c = j.comparison
        seeds, test_rows = rules.sample_size(c)
        out.append({"Comparison": f"{label} − full FT", "Observed difference": f"{c.value:+.2f}",
                    "SD of per-seed differences": f"{c.sd_seed:.2f}" if c.sd_seed == c.sd_seed else "–",
                    "Seeds needed": _count(seeds, c.n, "seeds"),
                    "Test rows needed": _count(test_rows, c.rows, "rows") if c.rows and test_rows == test_rows
                    else "– (macro-F1 is no mean over rows)" if c.rows else "no per-row outputs in these records"})
    return pd.DataFrame(out)


SAMPLE_NOTE = ("Sample size to decide non-inferiority at the margin with 80% power, if the observed difference and "
               "spreads are the truth: seeds by the one-sided paired t over seeds (statsmodels TTestPower, the "
               "seed-to-seed SD of the difference), test rows by a one-sided test over rows (statsmodels "
               "NormalIndPower, one sample, the SD of the per-row differences); each holds the other source of "
               "noise as it is (more seeds: `seed=0,1,...` on the command line, or the reported seeds of the own-data "
               "protocol, `hydra.sweeper.bracket.confirm_seeds='0,1,...'`; more test rows: `dataset.sizes.test=...`, "
               "if the file has them). Where the observed difference is at or below −margin, no sample would show "
               "non-inferiority: more runs would more likely show the cell worse.")


def section(cells: list[Cell], metric: str, rules: Rules) -> Section:
    full = find(cells, "full")
    out = Section("The answer")
    bounds = difference_bounds(metric)
    out.table(rows(cells, full, rules),
              f"{metric_label(metric)}: mean and 95% t interval over the seeds whose runs learned, at each cell's "
              "learning rate (chosen on validation where several were tried); intervals are kept inside the metric's "
              f"range{' (a * marks one cut at it)' if bounds else ''}; seed SD: the spread of one run's score across "
              f"seeds. {DIFFERENCES} Non-inferiority: the one-sided 95% lower bound and Holm's p. Memory: the exact "
              "ledger of one training step; MB = 1e6 bytes.")
    out.text(recommendation(cells, full, rules))
    note = fallback_note(cells, full, rules)
    if note:
        out.text(note)
    sizes = sample_sizes(cells, full, rules)
    if len(sizes):
        out.table(sizes, SAMPLE_NOTE)
    return out
