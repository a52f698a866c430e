"""Accuracy (or any recorded metric) against LoRA rank, with full fine-tuning as the reference.

    python -m analysis.rank_vs_accuracy --results results --out reports/rank [--metric test_accuracy]

Rows: rank. Columns: method (LoRA, QLoRA), one set per setting when the records hold several
(model, dataset, or anything else that differs between runs of one rank, such as target
modules). Cells: mean ± sample std over seeds, with n. The "full FT" row is the full
fine-tuning reference of the same model, dataset and training setting, repeated in each method
column it applies to. Only records with status ok and the metric count; the rest are listed.

The plot: metric against rank on a log2 axis, error bars ±1 std, full fine-tuning as a
horizontal band (mean ± std), one panel per model and dataset setting.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import pandas as pd

from analysis import tables
from analysis.collect import METHOD_SETTING_KEYS, hashable, collect, filter_rows, split_keys

FULL_ROW = "full FT"


@dataclass
class RankTable:
    metric: str
    long: pd.DataFrame      # one row per cell: setting keys, method, rank (NA for full), mean, std, n
    display: pd.DataFrame   # the formatted rows-by-rank table
    shared: list[str]       # setting keys full fine-tuning shares with the adapters (model, dataset, ...)
    specific: list[str]     # method-specific setting keys that split adapter columns (targets, ...)
    title: str
    left_out: int           # ok records without the metric

    def markdown(self) -> str:
        return f"{self.title}\n\n{tables.to_markdown(self.display)}" if len(self.display) else f"{self.title}\n\n(no runs)"


def build(df: pd.DataFrame, metric: str = "test_accuracy", digits: int = 2) -> RankTable:
    column = f"metrics.{metric}"
    if column not in df:
        df = df.assign(**{column: float("nan")})
    ok = df[df["status"] == "ok"]
    left_out = int(ok[column].isna().sum())
    ok = ok[ok[column].notna()]
    split = split_keys(ok)
    specific = [k for k in split if k in METHOD_SETTING_KEYS]
    shared = ["model", "dataset"] + [k for k in split if k not in METHOD_SETTING_KEYS]
    ok = ok.assign(value=tables.scaled(ok[column], metric),
                   **{k: ok[k].map(hashable) for k in shared + specific})
    adapters, full = ok[ok["method"] != "full"], ok[ok["method"] == "full"]
    long = pd.concat([tables.summarize(adapters, shared + specific + ["method", "rank"], "value"),
                      tables.summarize(full, shared + specific + ["method"], "value")], ignore_index=True)
    if len(long):
        long.insert(len(shared + specific) + 2, "metric", metric)
    shown_shared = [k for k in shared if ok[k].nunique() > 1]
    context = " / ".join(f"{ok[k].iloc[0]}" for k in ("model", "dataset")) if len(ok) and not shown_shared else None
    title = f"{tables.metric_label(metric)} by LoRA rank, mean ± std over seeds (n seeds)" + (
        f": {context}" if context else "")
    display = _display(long, shared, shown_shared, specific, digits)
    return RankTable(metric, long, display, shared, specific, title, left_out)


def _display(long: pd.DataFrame, shared, shown_shared, specific, digits) -> pd.DataFrame:
    if not len(long):
        return pd.DataFrame()
    adapters, full = long[long["method"] != "full"], long[long["method"] == "full"]
    columns: dict[tuple, str] = {}  # (shared values, specific values, method) -> column label
    for _, row in adapters.iterrows():
        key = (tuple(row[shared]), tuple(row[specific]), row["method"])
        label_keys = shown_shared + [k for k in specific if row[k] != "None"]
        prefix = tables.setting_label(row, label_keys)
        columns.setdefault(key, f"{prefix} · {row['method']}" if prefix else row["method"])
    for _, row in full.iterrows():  # a setting with only full runs still gets a column
        if not any(k[0] == tuple(row[shared]) for k in columns):
            prefix = tables.setting_label(row, shown_shared)
            columns[(tuple(row[shared]), (), "full")] = f"{prefix} · full" if prefix else "full"
    ranks = sorted(int(r) for r in adapters["rank"].dropna().unique())
    rows = []
    for rank in ranks:
        cells = {"rank": str(rank)}
        for (sh, sp, method), label in columns.items():
            match = adapters[(adapters["method"] == method) & (adapters["rank"] == rank)
                             & _equals(adapters, shared, sh) & _equals(adapters, specific, sp)]
            cells[label] = _cell(match, digits)
        rows.append(cells)
    for _, reference in full.iterrows():
        extra = [f"{k.split('.')[-1]}={reference[k]}" for k in specific if reference[k] != "None"
                 and full[k].nunique() > 1]
        cells = {"rank": FULL_ROW + (f" ({', '.join(extra)})" if extra else "")}
        for (sh, _sp, _method), label in columns.items():
            same_setting = tuple(reference[shared]) == sh
            cells[label] = tables.mean_std(reference["mean"], reference["std"], reference["n"], digits) if same_setting else ""
        rows.append(cells)
    return pd.DataFrame(rows, columns=["rank", *columns.values()]).fillna("")


def _equals(df: pd.DataFrame, keys: list[str], values: tuple) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for key, value in zip(keys, values):
        mask &= df[key] == value
    return mask


def _cell(match: pd.DataFrame, digits: int) -> str:
    if not len(match):
        return ""
    row = match.iloc[0]
    return tables.mean_std(row["mean"], row["std"], row["n"], digits)


def plot(table: RankTable, path: str) -> str | None:
    """One panel per (model, dataset, shared setting); returns the PNG path, or None with no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    long = table.long
    if not len(long):
        return None
    settings = list(dict.fromkeys(tuple(r) for r in long[table.shared].itertuples(index=False)))
    fig, axes = plt.subplots(1, len(settings), figsize=(6.4 * len(settings), 4.4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        here = long[_equals(long, table.shared, setting)]
        adapters, full = here[here["method"] != "full"], here[here["method"] == "full"]
        lines = adapters.groupby(["method", *table.specific], sort=True)
        for key, line in lines:
            method, *spec = key if isinstance(key, tuple) else (key,)
            line = line.sort_values("rank")
            extra = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(table.specific, spec) if v != "None")
            ax.errorbar(line["rank"].astype(int), line["mean"], yerr=line["std"].fillna(0), marker="o",
                        capsize=3, label=f"{method}" + (f" ({extra})" if extra else ""))
        for i, (_, ref) in enumerate(full.iterrows()):
            std = 0.0 if pd.isna(ref["std"]) else ref["std"]
            colour = f"C{len(lines) + i}"
            ax.axhspan(ref["mean"] - std, ref["mean"] + std, color=colour, alpha=0.15, lw=0)
            ax.axhline(ref["mean"], color=colour, ls="--", label=f"full FT (n={ref['n']})")
        if len(adapters):
            ranks = sorted(int(r) for r in adapters["rank"].unique())
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ranks))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([str(r) for r in ranks]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("LoRA rank r (log2 scale)")
        ax.set_ylabel(tables.metric_label(table.metric) + ("  (lower is better)" if tables.lower_is_better(table.metric) else ""))
        ax.set_title(" / ".join(str(v) for v in setting[:2]) + "".join(
            f"\n{k.split('.')[-1]}={v}" for k, v in zip(table.shared[2:], setting[2:])), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{table.metric} vs LoRA rank: mean ± std over seeds", fontsize=11)
    return tables.save_figure(fig, path)


def write(table: RankTable, out_dir: str, name: str = "rank_vs_accuracy") -> dict:
    paths = tables.write(table.display, out_dir, name, table.title, csv=table.long)
    png = plot(table, os.path.join(out_dir, f"{name}.png"))
    if png:
        paths["png"] = png
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="reports/rank_vs_accuracy")
    parser.add_argument("--metric", default="auto", help="a metrics.* key of the records (auto: test_accuracy, "
                                                          "or test_perplexity for causal-LM runs)")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    args = parser.parse_args(argv)
    runs = filter_rows(collect(args.results).runs, args.where)
    table = build(runs, tables.choose_metric(runs, args.metric))
    write(table, args.out)
    print(table.markdown())


if __name__ == "__main__":
    main()
