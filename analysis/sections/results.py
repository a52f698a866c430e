"""The paper-style table: rows are ranks (and full FT), columns the methods at their chosen learning
rates, each with its 95% t interval and n; QLoRA - LoRA with its test; every method against full FT."""

from __future__ import annotations

import pandas as pd

from analysis import cells as cellmod
from analysis import figures, stats
from analysis.cells import Cell, find, method_labels
from analysis.document import Section
from analysis.rules import p_text

def metric_label(metric: str) -> str:
    name = metric.replace("test_", "Test ").replace("_", " ")
    return f"{name[0].upper()}{name[1:]} (%)" if cellmod.is_fraction(metric) else name[0].upper() + name[1:]


def score_text(cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.lr is None:
        return "no learning rate without a collapsed or failed run"
    note = "" if cell.tuned else ", not tuned"
    if cell.tuned and cell.choice.edge:
        note += f", on the grid's {cell.choice.edge} edge"
    collapsed = int((cell.chosen_runs["health"] == "collapsed").sum())
    note += f", {collapsed} collapsed" if collapsed else ""
    return f"{cell.score_text()} <sub>lr {cell.lr:g}{note}</sub>"


def adapter_params(cell: Cell) -> int | None:
    """The cell's adapter-only parameter count, as its records give it (`params.adapter`); None for
    records that predate that field (analysis reads records and builds no model to count them)."""
    runs = cell.runs
    if "params.adapter" in runs and runs["params.adapter"].notna().any():
        return int(runs["params.adapter"].dropna().iloc[0])
    return None


def paired_text(a: Cell | None, b: Cell | None) -> str:
    """a - b with its 95% interval, what the interval answers, its test and two-sided p."""
    if a is None or b is None or a.lr is None or b.lr is None:
        return ""
    diff = a.compare(b)
    est = diff.estimate(stats.LEVEL, cellmod.difference_bounds(a.metric))
    p = "" if diff.p is None else f", p {p_text(diff.p)}"
    return f"{est.text(signed=True)} <sub>{diff.method}{p}; answers: {diff.answers}</sub>"


def seed_sd_text(cell: Cell) -> str:
    sd = cell.seed_sd()
    return "–" if sd != sd else f"{sd:.2f}"


def main_table(cells: list[Cell]) -> pd.DataFrame:
    # Every method with a capacity knob, in table order (cells come sorted): a column each.
    methods = list(dict.fromkeys(c.method for c in cells if c.method != "full" and not pd.isna(c.rank)))
    labels = method_labels(cells)
    full = find(cells, "full")
    rows = []
    if full is not None:
        total = full.runs["params.total"].dropna()
        rows.append({"Rank": "Full FT", "Adapter params": f"all {int(total.iloc[0]):,}" if len(total) else "all",
                     "Full FT": score_text(full)})
    for rank in sorted({int(c.rank) for c in cells if not pd.isna(c.rank)}):
        here = {m: find(cells, m, rank) for m in methods}
        first = next(c for c in here.values() if c is not None)
        params = adapter_params(first)
        row = {"Rank": f"r={rank}", "Adapter params": f"{params:,}" if params is not None else "?"}
        row.update({labels.get(m, m): score_text(c) for m, c in here.items()})
        if "lora" in here and "qlora" in here:
            row["QLoRA − LoRA"] = paired_text(here["qlora"], here["lora"])
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def versus_full(cells: list[Cell]) -> pd.DataFrame:
    full = find(cells, "full")
    if full is None:
        return pd.DataFrame()
    rows = [{"Cell": c.label, "lr": f"{c.lr:g}" if c.lr else "", "Seed SD": seed_sd_text(c),
             "Difference to full FT (points)": paired_text(c, full)}
            for c in cells if c.method != "full"]
    return pd.DataFrame(rows)


def caption(cells: list[Cell], metric: str, runs: pd.DataFrame) -> str:
    test_rows = pd.to_numeric(runs.get("splits.test", pd.Series(dtype=float)), errors="coerce").dropna()
    scores = [v for c in cells for v in c.scores().values()]
    text = (f"{metric_label(metric)} at each cell's learning rate chosen on the validation split; mean and 95% "
            "Student t interval over the seeds whose runs learned (n); collapsed runs are counted in the cell, "
            "never averaged.")
    if len(test_rows) and scores and cellmod.is_fraction(metric):
        n, mean = int(test_rows.iloc[0]), sum(scores) / len(scores) / 100
        text += (f" The test split has {n:,} rows: one run's accuracy near {100 * mean:.0f}% carries a binomial "
                 f"standard error of ±{100 * stats.binomial_se(mean, n):.2f} points.")
    if any(c.estimate().clipped for c in cells):
        text += " An interval marked * reached past the metric's range and is cut at it (a t interval over few seeds)."
    return text + (" " + DIFFERENCES + " Adapter params count LoRA's A and B only (the task heads that train beside "
                   "them are not adapter).")


DIFFERENCES = ("Differences (95% interval, two-sided p): where both cells kept per-row outputs, a two-level bootstrap "
               "over the paired seeds and the shared test rows aligned by row id (it answers another training seed and "
               "another test sample; one seed: McNemar's exact test, answering another test sample); for records "
               "without per-row outputs, the paired t test over the seeds both cells ran (Welch's t where they differ), "
               "which answers another training seed only: the test split is held fixed.")


def chance(runs: pd.DataFrame) -> float | None:
    shares = runs.get("health_detail.majority_share", pd.Series(dtype=float)).dropna()
    return 100 * float(shares.median()) if len(shares) else None


def section(cells: list[Cell], runs: pd.DataFrame, metric: str, folder: str) -> Section:
    out = Section("Results")
    out.table(main_table(cells), caption(cells, metric, runs))
    versus = versus_full(cells)
    if len(versus):
        out.table(versus, "Every cell against full fine-tuning: the seed-to-seed SD of its score, the difference with "
                          "its 95% interval, its test and two-sided p, and what the interval answers.")
    out.figure(figures.rank_plot(cells, metric_label(metric), chance(runs) if cellmod.is_fraction(metric) else None,
                                 folder),
               f"{metric_label(metric)} against rank (log 2): mean and 95% t interval per cell at its chosen learning "
               "rate, each run a dot, collapsed runs hollow, full FT a band, chance dotted.")
    return out
