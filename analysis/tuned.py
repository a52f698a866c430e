"""Rank vs accuracy with the learning rate chosen per cell on the validation split, beside the default.

    python -m analysis.tuned --results results --sweep multirun/rank_vs_accuracy_tuned --out reports/tuned

A cell is one (model, dataset, method, rank) and every other setting that differs between runs
(scaling, DoRA, targets, ...), except the learning rate, which the sweep varies inside the cell.
Per cell:

- tuned: the learning rate whose runs have the best mean *validation* score over seeds (accuracy:
  highest; loss or perplexity: lowest). The test split never takes part in the choice. A learning
  rate with a diverged run is not eligible. Ties go to the smaller learning rate.
- default: the method's default learning rate (lab/conf/method/<name>.yaml), i.e. the untuned run.

Each is reported as test metric mean ± sample std over seeds, its 95% percentile-bootstrap interval
(analysis.uncertainty) and n, with the difference to full fine-tuning of the same setting under the
same view (full FT's own learning rate tuned, or at its default) and that difference's bootstrap
interval: a difference whose interval holds 0 is marked "within noise".
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import tables, uncertainty
from lab.config import Method, compose
from analysis.collect import CELL, METHOD_SETTING_KEYS, QLORA_DORA, collect, filter_rows, hashable, split_keys

LR = "config.trainer.learning_rate"
LR_KEYS = ("config.method.learning_rate", "config.trainer.learning_rate")
VIEWS = ("default", "tuned")
def default_learning_rates() -> dict[str, float]:
    """Each method's learning rate when none is given, as `lab-train method=<name>` composes it."""
    rates = {m: float(compose([f"method={m}"], validated=False).method.learning_rate) for m in Method.__members__}
    return {**rates, QLORA_DORA: rates["qlora"]}  # method.use_dora leaves the learning rate alone


def selection_metric(df: pd.DataFrame, metric: str) -> tuple[str, str | None]:
    """The validation counterpart of `metric` (test_accuracy -> validation_accuracy), and a note when
    records lack it and validation loss decides instead."""
    wanted = "validation_" + metric.removeprefix("test_")
    column = f"metrics.{wanted}"
    if not len(df) or (column in df and df[column].notna().all()):
        return wanted, None
    missing = int(df[column].isna().sum()) if column in df else len(df)
    return "validation_loss", (f"{missing} of {len(df)} records have no {wanted} (written before it was "
                               f"recorded): the learning rate is chosen by validation_loss instead")


@dataclass
class Tuned:
    metric: str
    selection: str
    keys: list[str]          # the cell: CELL plus every other setting that differs, except the learning rate
    specific: list[str]      # method-specific keys among them (scaling, use_dora, ...): adapters only
    by_lr: pd.DataFrame      # one row per (cell, learning rate)
    cells: pd.DataFrame      # one row per (cell, view), with the difference to full fine-tuning
    defaults: dict
    notes: list[str] = field(default_factory=list)


def per_learning_rate(runs: pd.DataFrame, metric: str, selection: str, keys: list[str]) -> pd.DataFrame:
    test, val = f"metrics.{metric}", f"metrics.{selection}"
    rows = []
    for group, here in runs.groupby(keys + ["lr"], dropna=False, sort=True):
        ok = here[(here["status"] == "ok") & here[test].notna() & here[val].notna()]
        values = [float(v) for v in tables.scaled(ok[test], metric)]
        row = dict(zip(keys + ["lr"], group))
        row.update({
            "n": len(ok), "diverged": int((here["status"] == "diverged").sum()),
            "validation_mean": float(tables.scaled(ok[val], selection).mean()) if len(ok) else math.nan,
            "test_values": values, "seeds": [int(s) for s in ok["seed"]],
            "trainable_params": float(ok["params.trainable"].mean()) if "params.trainable" in ok else math.nan,
            "ledger_total_bytes": float(ok["memory.ledger_total"].mean()) if "memory.ledger_total" in ok else math.nan,
        })
        rows.append(row)
    return pd.DataFrame(rows)


def choose(by_lr: pd.DataFrame, keys: list[str], selection: str, defaults: dict) -> pd.DataFrame:
    """One row per (cell, view): the default learning rate's and the validation-best one's."""
    sign = 1 if tables.lower_is_better(selection) else -1
    rows = []
    for group, here in by_lr.groupby(keys, dropna=False, sort=True):
        cell = dict(zip(keys, group))
        default = defaults.get(cell["method"])
        at_default = here[np.isclose(here["lr"], default)] if default is not None else here.iloc[:0]
        if len(at_default):
            rows.append({**at_default.iloc[0].to_dict(), "view": "default"})
        eligible = here[(here["n"] > 0) & (here["diverged"] == 0)]
        if len(eligible):
            best = eligible.assign(_key=sign * eligible["validation_mean"]).sort_values(["_key", "lr"]).iloc[0]
            rows.append({**best.drop("_key").to_dict(), "view": "tuned"})
    return pd.DataFrame(rows)


def against_full(cells: pd.DataFrame, shared: list[str]) -> pd.DataFrame:
    """Each cell's test metric summary and its difference to full fine-tuning of the same shared
    setting under the same view."""
    out = []
    for _, row in cells.iterrows():
        values = row["test_values"]
        low, high = uncertainty.mean_ci(values)
        extra = {"mean": float(np.mean(values)) if values else math.nan,
                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                 "ci_low": low, "ci_high": high, "vs_full": math.nan, "vs_full_low": math.nan,
                 "vs_full_high": math.nan, "within_noise": None}
        if row["method"] != "full":
            full = cells[(cells["method"] == "full") & (cells["view"] == row["view"])]
            for key in shared:
                full = full[full[key] == row[key]]
            if len(full) and values and full.iloc[0]["test_values"]:
                reference = full.iloc[0]["test_values"]
                interval = uncertainty.difference_ci(values, reference)
                extra.update(vs_full=float(np.mean(values) - np.mean(reference)), vs_full_low=interval[0],
                             vs_full_high=interval[1], within_noise=uncertainty.within_noise(interval))
        out.append({**row.to_dict(), **extra})
    return pd.DataFrame(out)


def build(df: pd.DataFrame, metric: str = "auto", defaults: dict | None = None) -> Tuned:
    metric = tables.choose_metric(df, metric)
    runs = df[df["status"].isin(["ok", "diverged"])]
    test = f"metrics.{metric}"
    measured = runs[(runs["status"] == "ok") & runs[test].notna()] if test in runs else runs.iloc[:0]
    selection, note = selection_metric(measured, metric)
    notes = [note] if note else []
    split = [k for k in split_keys(measured) if k not in LR_KEYS]
    keys = CELL + split
    specific = [k for k in split if k in METHOD_SETTING_KEYS]
    lr = runs[LR].astype(float) if LR in runs else pd.Series(math.nan, index=runs.index)
    runs = runs.assign(lr=lr, **{k: runs[k].map(hashable) for k in split})
    runs = runs[runs["status"].eq("diverged") | runs.index.isin(measured.index)]
    defaults = defaults if defaults is not None else default_learning_rates()
    by_lr = per_learning_rate(runs, metric, selection, keys)
    cells = choose(by_lr, keys, selection, defaults) if len(by_lr) else pd.DataFrame()
    shared = [k for k in keys if k not in specific + ["method", "rank"]]
    cells = against_full(cells, shared) if len(cells) else cells
    for method in sorted(set(by_lr["method"]) if len(by_lr) else []):
        if method in defaults and not np.isclose(by_lr.loc[by_lr["method"] == method, "lr"], defaults[method]).any():
            notes.append(f"{method}: no run at its default learning rate {defaults[method]:g}, so no untuned column")
    return Tuned(metric, selection, keys, specific, by_lr, cells, defaults, notes)


# ---- tables ----------------------------------------------------------------------------------------

def label(row, specific: list[str]) -> str:
    parts = [row["method"]] + [f"{k.split('.')[-1]}={row[k]}" for k in specific if row[k] not in ("None", None)
                               and not (k.endswith("use_dora") and row[k] is False)]
    return " · ".join(str(p) for p in parts)


def _summary(row, digits: int = 2) -> str:
    if not row["test_values"]:
        return ""
    spread = "" if math.isnan(row["std"]) else f" ± {row['std']:.{digits}f}"
    interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
    return f"{row['mean']:.{digits}f}{spread}{interval} (n={len(row['test_values'])})"


def _difference(row, digits: int = 2) -> str:
    if row["method"] == "full" or math.isnan(row["vs_full"]):
        return ""
    interval = "" if math.isnan(row["vs_full_low"]) else (
        f" [{row['vs_full_low']:+.{digits}f}, {row['vs_full_high']:+.{digits}f}]")
    mark = {True: " within noise", False: "", None: ""}[row["within_noise"]]
    return f"{row['vs_full']:+.{digits}f}{interval}{mark}"


def side_by_side(tuned: Tuned, digits: int = 2) -> pd.DataFrame:
    """One row per cell: the default learning rate's result beside the validation-chosen one's."""
    cells = tuned.cells
    if not len(cells):
        return pd.DataFrame()
    shown_shared = [k for k in tuned.keys if k not in tuned.specific + ["method", "rank"]
                    and cells[k].nunique() > 1]
    unit = " (%)" if tables.is_fraction(tuned.metric) else ""
    rows = []
    for _, here in cells.groupby(tuned.keys, dropna=False, sort=False):
        first = here.iloc[0]
        views = {v["view"]: v for _, v in here.iterrows()}
        row = {**({"setting": tables.setting_label(first, shown_shared)} if shown_shared else {}),
               "method": label(first, tuned.specific),
               "rank": "" if pd.isna(first["rank"]) else int(first["rank"])}
        for view in VIEWS:
            cell = views.get(view)
            name = "default LR" if view == "default" else "LR chosen on validation"
            row[name] = "" if cell is None else f"{cell['lr']:g}"
            if view == "tuned":
                row[f"validation {tuned.selection.removeprefix('validation_')} at it"] = (
                    "" if cell is None else f"{cell['validation_mean']:.{digits}f}")
            row[f"test {tuned.metric.removeprefix('test_')}{unit}: {view}"] = (
                "" if cell is None else _summary(cell, digits))
            row[f"vs full FT: {view}"] = "" if cell is None else _difference(cell, digits)
        rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    order = {"full": 0, "lora": 1, "qlora": 2, "dora": 3, QLORA_DORA: 4}
    sort = table.assign(_m=[order.get(m.split(" ")[0], 9) for m in table["method"]],
                        _r=[-1 if r == "" else r for r in table["rank"]])
    return table.loc[sort.sort_values([*(["setting"] if shown_shared else []), "_m", "method", "_r"]).index]


def caption(tuned: Tuned) -> str:
    return (f"Test {tuned.metric} by method and rank: at the method's default learning rate and at the one "
            f"with the best mean {tuned.selection} over seeds. Cells: mean ± sample std [95% bootstrap "
            "interval of the mean] (n seeds). 'vs full FT': difference of means to full fine-tuning under "
            "the same view [95% bootstrap interval]; 'within noise' when that interval holds 0.")


def grid_table(tuned: Tuned, digits: int = 2) -> pd.DataFrame:
    """Every learning rate of every cell: validation mean, test mean, n, and which one was chosen."""
    rows = []
    chosen = {(tuple(r[k] for k in tuned.keys), r["lr"]) for _, r in tuned.cells.iterrows() if r["view"] == "tuned"}
    for _, row in tuned.by_lr.iterrows():
        values = row["test_values"]
        rows.append({"method": label(row, tuned.specific), "rank": "" if pd.isna(row["rank"]) else int(row["rank"]),
                     "lr": f"{row['lr']:g}", "n": row["n"], "diverged": row["diverged"],
                     f"mean {tuned.selection}": "" if math.isnan(row["validation_mean"])
                     else f"{row['validation_mean']:.{digits}f}",
                     f"mean {tuned.metric}": f"{np.mean(values):.{digits}f}" if values else "",
                     "chosen": "yes" if (tuple(row[k] for k in tuned.keys), row["lr"]) in chosen else ""})
    return pd.DataFrame(rows)


def plot(tuned: Tuned, path: str) -> str | None:
    """Test metric against rank, default learning rate (dashed) and validation-chosen (solid), with
    95% bootstrap intervals; full fine-tuning as horizontal lines. Meant for one model and dataset
    (narrow a mixed store with --where)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = tuned.cells
    if not len(cells):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    adapters = cells[cells["method"] != "full"]
    series = list(dict.fromkeys(label(r, tuned.specific) for _, r in adapters.iterrows()))
    for i, name in enumerate(series):
        for view, style, face in (("default", "--", "none"), ("tuned", "-", f"C{i}")):
            line = adapters[(adapters["view"] == view)
                            & (adapters.apply(lambda r: label(r, tuned.specific), axis=1) == name)]
            line = line.sort_values("rank")
            if not len(line):
                continue
            errors = np.array([line["mean"] - line["ci_low"].fillna(line["mean"]),
                               line["ci_high"].fillna(line["mean"]) - line["mean"]])
            ax.errorbar(line["rank"].astype(float), line["mean"], yerr=errors, color=f"C{i}", ls=style, marker="o",
                        markerfacecolor=face, capsize=3, label=f"{name}, {'LR chosen on validation' if view == 'tuned' else 'default LR'}")
    for view, style in (("default", "--"), ("tuned", "-")):
        for _, ref in cells[(cells["method"] == "full") & (cells["view"] == view)].iterrows():
            ax.axhline(ref["mean"], color="black", ls=style, lw=1,
                       label=f"full FT, {'LR chosen on validation' if view == 'tuned' else 'default LR'} "
                             f"(lr {ref['lr']:g})")
    if len(adapters):
        ranks = sorted(int(r) for r in adapters["rank"].dropna().unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
    ax.set_xlabel("rank r (log2 scale)")
    ax.set_ylabel(tables.metric_label(tuned.metric))
    ax.set_title(f"{tuned.metric}: default vs validation-chosen learning rate (95% bootstrap intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return tables.save_figure(fig, path)


def _cells_csv(tuned: Tuned) -> pd.DataFrame:
    cells = tuned.cells.copy()
    for column in ("test_values", "seeds") if len(cells) else ():
        cells[column] = cells[column].map(lambda v: " ".join(f"{x:g}" for x in v))
    return cells


def write(tuned: Tuned, out_dir: str, name: str = "tuned") -> dict:
    paths = tables.write(side_by_side(tuned), out_dir, name, caption(tuned), csv=_cells_csv(tuned))
    grid = grid_table(tuned)
    grid_paths = tables.write(grid, out_dir, f"{name}_grid", f"Every learning rate tried per cell "
                              f"(choice by mean {tuned.selection}; the test mean is shown, never used)")
    paths["grid"] = grid_paths["md"]
    png = plot(tuned, os.path.join(out_dir, f"{name}.png"))
    if png:
        paths["png"] = png
    return paths


def shared_keys(tuned: Tuned) -> list[str]:
    return [k for k in tuned.keys if k not in tuned.specific + ["method", "rank"]]


def write_all(tuned: Tuned, out_dir: str) -> tuple[str, dict]:
    """The side-by-side table, every learning rate tried, the seed's claims and the Pareto plots:
    files into `out_dir`, and the Markdown section for a report."""
    from analysis import claims, pareto

    paths = write(tuned, out_dir)
    parts = [caption(tuned), "", tables.to_markdown(side_by_side(tuned)) if len(tuned.cells) else "(no runs)"]
    parts += [f"\nNote: {n}" for n in tuned.notes]
    if "png" in paths:
        parts += ["", "![default vs chosen learning rate](tuned.png)"]
    parts += ["", f"Every learning rate tried: [tuned_grid.md](tuned_grid.md). {uncertainty_note()}"]

    parts += ["", "### The seed's claims on these runs", ""]
    # The rules' tolerance is in points of a score where higher is better (accuracy, F1).
    if tables.is_fraction(tuned.metric):
        judged = claims.judge_all(tuned.cells, shared_keys(tuned), tuned.specific) if len(tuned.cells) else []
        if judged:
            claims.to_frame(judged).to_csv(os.path.join(out_dir, "claims.csv"), index=False)
            paths["claims"] = os.path.join(out_dir, "claims.csv")
        parts.append(claims.markdown(judged))
    else:
        parts.append(f"(judged on accuracy-like metrics only; this report's metric is {tuned.metric})")

    parts += ["", "### Accuracy against cost (Pareto)", ""]
    higher = not tables.lower_is_better(tuned.metric)
    settings = tuned.cells.groupby(shared_keys(tuned), dropna=False, sort=True) if len(tuned.cells) else []
    for i, (setting, cells) in enumerate(settings):
        frame = pareto.flag(pareto.points(cells, lambda r: label(r, tuned.specific)), higher)
        name = "pareto" if len(settings) == 1 else f"pareto_{i + 1}"
        frame.to_csv(os.path.join(out_dir, f"{name}.csv"), index=False)
        png = pareto.plot(frame, tuned.metric, os.path.join(out_dir, f"{name}.png"))
        paths[name] = png
        title = " / ".join(str(v) for v in (setting if isinstance(setting, tuple) else (setting,)))
        on = {cost: ", ".join(f"{m}" + ("" if pd.isna(r) else f" r={int(r)}") for m, r in
                              zip(frame.loc[frame[f"frontier_{cost}"], "method"], frame.loc[frame[f"frontier_{cost}"], "rank"]))
              for cost, _, _ in pareto.COSTS}
        parts += [f"{title}: on the frontier by trainable parameters: {on['trainable_params'] or '-'}; by measured "
                  f"memory (ledger total): {on['ledger_total_bytes'] or '-'}.", "", f"![Pareto]({name}.png)", ""]
    return "\n".join(parts).rstrip(), paths


def uncertainty_note() -> str:
    from analysis import uncertainty

    return (f"Intervals: percentile bootstrap over seeds, {uncertainty.RESAMPLES:,} resamples, generator seed "
            f"{uncertainty.SEED}; with a handful of seeds they understate the spread, so 'within noise' is a "
            "lenient bar.")


def main(argv: list[str] | None = None) -> None:
    from analysis.report import read_sweep, select_sweep

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--sweep", help="a sweep folder or its sweep_summary.json: only its runs")
    parser.add_argument("--out", default="reports/tuned")
    parser.add_argument("--metric", default="auto")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    args = parser.parse_args(argv)
    collection = collect(args.results)
    if args.sweep:
        collection, _ = select_sweep(collection, read_sweep(args.sweep))
    tuned = build(filter_rows(collection.runs, args.where), args.metric)
    print(write_all(tuned, args.out)[0])


if __name__ == "__main__":
    main()
