"""Full fine-tuning vs LoRA vs QLoRA: parameters, memory, speed and accuracy, as measured.

    python -m analysis.memory_comparison --results results --out reports/memory

Three outputs:
- `memory`: one row per (setting, method, rank): trainable and total parameters, bytes of the
  weights, the measured peak memory (CPU: resident set above the run's baseline; CUDA: allocated
  bytes above it), training tokens/s and the metric; means over seeds, with n.
- `memory_breakdown.png`: a stacked bar per row of every byte category the records hold under
  `memory` (today `memory.weights.<role>_<storage>`; any category added later is stacked too),
  the measured peak drawn beside as a marker.
- `summary`: the seed document's "Summary Comparison" rows (analysis/reference/seed_tables.yaml)
  with the measured numbers beside each claim: one LoRA and one QLoRA rank (the rank both
  share closest to 8, the seed's "Rank 8", unless given).

MB = 1e6 bytes throughout.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import yaml

from analysis import tables
from analysis.collect import hashable, collect, filter_rows, split_keys

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "seed_tables.yaml")
METHOD_NAMES = {"full": "Full Fine-Tuning", "lora": "LoRA", "qlora": "QLoRA"}
METHOD_ORDER = {"full": 0, "lora": 1, "qlora": 2}


def byte_categories(df: pd.DataFrame) -> list[str]:
    """Columns holding bytes under `memory`, except the measured peak (drawn on its own), totals
    and `memory.placement` (host / device splits of the same bytes), which would count them twice."""
    found = [c for c in df.columns if c.startswith("memory.") and not c.startswith(("memory.peak.", "memory.placement."))
             and c != "memory.unit" and "total" not in c and pd.api.types.is_numeric_dtype(df[c])]
    return sorted(found, key=lambda c: not c.startswith("memory.weights."))  # weights at the bottom of a bar


def _settings(ok: pd.DataFrame) -> tuple[list[str], list[str]]:
    keys = ["model", "dataset"] + split_keys(ok)
    shown = [k for k in keys if ok[k].map(hashable).nunique() > 1]
    return keys, shown


def aggregate(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Means over seeds per (setting, method, rank) of every number the tables use."""
    ok = df[df["status"] == "ok"]
    if not len(ok):
        return pd.DataFrame(), [], []
    keys, shown = _settings(ok)
    column = f"metrics.{metric}"
    ok = ok.assign(**{k: ok[k].map(hashable) for k in keys}, rank=ok["rank"].astype("float"),
                   metric=tables.scaled(ok[column], metric) if column in ok else float("nan"),
                   peak_device=ok["memory.peak.device"] if "memory.peak.device" in ok else None)
    means = ["params.trainable", "params.total", "peak_memory_bytes", "timing.train_tokens_per_second",
             *byte_categories(ok)]
    out = ok.groupby(keys + ["method", "rank"], dropna=False, sort=False).agg(
        **{c: (c, "mean") for c in means if c in ok}, n=("run_id", "size"), peak_device=("peak_device", "first"),
        metric_mean=("metric", "mean"), metric_std=("metric", "std"), metric_n=("metric", "count"))
    out = out.reset_index()
    out["_order"] = out["method"].map(METHOD_ORDER).fillna(9)
    out = out.sort_values(keys + ["_order", "rank"]).drop(columns="_order").reset_index(drop=True)
    return out, keys, shown


def memory_table(agg: pd.DataFrame, shown: list[str], metric: str) -> pd.DataFrame:
    if not len(agg):
        return pd.DataFrame()
    weights = agg[[c for c in byte_categories(agg) if c.startswith("memory.weights.")]].sum(axis=1, min_count=1)
    rows = []
    for i, row in agg.iterrows():
        rows.append({
            **({"setting": tables.setting_label(row, shown)} if shown else {}),
            "method": row["method"],
            "rank": "" if pd.isna(row["rank"]) else int(row["rank"]),
            "n": int(row["n"]),
            "trainable params": _int(row.get("params.trainable")),
            "total params": _int(row.get("params.total")),
            "trainable %": _fmt(100 * row["params.trainable"] / row["params.total"], 3) if "params.total" in row else "",
            "weights (MB)": _fmt(weights[i] / tables.MB, 2),
            "peak (MB)": _fmt(row.get("peak_memory_bytes", float("nan")) / tables.MB, 1),
            "peak device": row.get("peak_device") or "",
            "train tokens/s": _fmt(row.get("timing.train_tokens_per_second", float("nan")), 0),
            tables.metric_label(metric): tables.mean_std(row.get("metric_mean"), row.get("metric_std"),
                                                         int(row.get("metric_n") or 0)),
        })
    return pd.DataFrame(rows)


def _int(value) -> str:
    return "" if value is None or pd.isna(value) else f"{int(round(value)):,}"


def _fmt(value, digits: int) -> str:
    return "" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


def breakdown_plot(agg: pd.DataFrame, shown: list[str], path: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = byte_categories(agg) if len(agg) else []
    if not categories:
        return None
    labels = [f"{r['method']}" + ("" if pd.isna(r["rank"]) else f" r={int(r['rank'])}")
              + (f"\n{tables.setting_label(r, shown)}" if shown else "") for _, r in agg.iterrows()]
    has_peak = "peak_memory_bytes" in agg and agg["peak_memory_bytes"].notna().any()
    width = max(6.0, 0.9 * len(agg) + 2)
    fig, axes = plt.subplots(1, 2 if has_peak else 1, figsize=(2 * width if has_peak else width, 4.8), squeeze=False)
    # Separate panels: on small models the process's peak dwarfs the weights and would flatten them.
    ax = axes[0][0]
    bottom = pd.Series(0.0, index=agg.index)
    for i, category in enumerate(categories):
        values = agg[category].fillna(0) / tables.MB
        ax.bar(labels, values, bottom=bottom, label=category.removeprefix("memory.").replace(".", ": "), color=f"C{i}")
        bottom += values
    ax.set_ylabel("MB (1e6 bytes)")
    ax.set_title("Bytes by category (stacked), per run", fontsize=10)
    ax.set_ylim(top=float(bottom.max()) * 1.4 or None)  # room for the legend above the bars
    ax.legend(fontsize=8)
    if has_peak:
        device = ", ".join(sorted(set(agg["peak_device"].dropna().astype(str)))) if "peak_device" in agg else "?"
        peak_ax = axes[0][1]
        peak_ax.bar(labels, agg["peak_memory_bytes"] / tables.MB, color="0.4")
        peak_ax.set_ylabel("MB (1e6 bytes)")
        peak_ax.set_title(f"Measured peak above the run's baseline ({device}), mean over seeds", fontsize=10)
    for a in axes[0]:
        a.tick_params(axis="x", labelsize=8)
        a.grid(axis="y", alpha=0.3)
    return tables.save_figure(fig, path)


def load_seed_summary(path: str = REFERENCE) -> dict:
    with open(path) as f:
        reference = yaml.safe_load(f)
    return {"source": reference.get("source"), "rows": {r["method"]: r for r in reference["summary_comparison"]["rows"]},
            "notes": reference["summary_comparison"].get("notes", [])}


def summary_ranks(agg: pd.DataFrame, rank: int | None) -> dict[str, int]:
    """The LoRA and QLoRA rank of the summary rows: `rank` if given; else the rank both ran that is
    closest to the seed's 8, or, with none in common, each method's own closest."""
    ran = {m: set(agg.loc[agg["method"] == m, "rank"].dropna().astype(int)) for m in ("lora", "qlora")}
    if rank is not None:
        return {m: rank for m in ran}
    shared = ran["lora"] & ran["qlora"]
    if shared:
        return {m: _closest_to_8(shared) for m in ran}
    return {m: _closest_to_8(ranks) for m, ranks in ran.items() if ranks}


def _closest_to_8(ranks: set[int]) -> int:
    return min(ranks, key=lambda r: (abs(r - 8), r))


def fits(peak_bytes: float) -> str:
    """The smallest common device class whose memory holds the measured peak (this model only)."""
    if pd.isna(peak_bytes):
        return ""
    for limit, label in ((8e9, "laptop / any GPU (8 GB)"), (24e9, "consumer GPU (24 GB)"),
                         (80e9, "one data-centre GPU (80 GB)")):
        if peak_bytes <= limit:
            return label
    return "several GPUs (> 80 GB)"


def summary_table(agg: pd.DataFrame, keys: list[str], shown: list[str], metric: str,
                  rank: int | None = None, reference: str = REFERENCE) -> tuple[pd.DataFrame, str]:
    """The seed's Summary Comparison, a row per method and setting: its claim, then what we measured."""
    seed = load_seed_summary(reference)
    if not len(agg):
        return pd.DataFrame(), ""
    ranks = summary_ranks(agg, rank)
    chosen = agg[(agg["method"] == "full") | (agg["rank"] == agg["method"].map(ranks))]
    rows = []
    for _, group in chosen.groupby(keys, dropna=False, sort=False):
        full = group[group["method"] == "full"]
        full_peak = full["peak_memory_bytes"].iloc[0] if len(full) else float("nan")
        for _, row in group.iterrows():
            claim = seed["rows"].get(row["method"], {})
            trainable, total = row.get("params.trainable"), row.get("params.total")
            share = 100 * trainable / total if total else float("nan")
            updates = ("yes: every weight trains" if share >= 99.999 else
                       f"no: {share:.2f}% of parameters train" + ("; base frozen in 4 bits" if row["method"] == "qlora" else
                                                                 "; base frozen"))
            peak = row.get("peak_memory_bytes", float("nan"))
            relative = "" if pd.isna(full_peak) or pd.isna(peak) or row["method"] == "full" else f" ({peak / full_peak:.2f}× full)"
            name = METHOD_NAMES.get(row["method"], row["method"]) + ("" if pd.isna(row["rank"]) else f" (r={int(row['rank'])})")
            rows.append({
                **({"setting": tables.setting_label(row, shown)} if shown else {}),
                "method": name,
                "seed: updates all weights": claim.get("updates_all_weights", ""),
                "measured: updates all weights": updates,
                "seed: memory": claim.get("memory", ""),
                "measured: peak (MB)": _fmt(peak / tables.MB, 1) + relative,
                "seed: trainable (7B)": claim.get("trainable_7b", ""),
                f"measured: trainable ({row['model']})": _int(trainable),
                "measured: train tokens/s": _fmt(row.get("timing.train_tokens_per_second", float("nan")), 0),
                f"measured: {tables.metric_label(metric)}": tables.mean_std(
                    row.get("metric_mean"), row.get("metric_std"), int(row.get("metric_n") or 0)),
                "seed: suitable for": claim.get("suitable_for", ""),
                "measured peak fits": fits(peak),
            })
    table = pd.DataFrame(rows)
    devices = ", ".join(sorted(set(agg["peak_device"].dropna().astype(str)))) if "peak_device" in agg else "?"
    at_ranks = ", ".join(f"{METHOD_NAMES[m]} at rank {r}" for m, r in ranks.items())
    caption = (f"The seed document's Summary Comparison, each claim beside what this suite measured "
               f"({at_ranks}; peak = memory above the run's baseline on {devices}; MB = 1e6 bytes; "
               f"'fits' holds for the measured model only). Seed rows: analysis/reference/seed_tables.yaml "
               f"summary_comparison ({seed['source'].split(',')[0]}).")
    return table, caption


def write_all(df: pd.DataFrame, out_dir: str, metric: str, rank: int | None = None) -> dict:
    agg, keys, shown = aggregate(df, metric)
    paths = {}
    if not len(agg):
        return paths
    memory = memory_table(agg, shown, metric)
    paths["memory"] = tables.write(memory, out_dir, "memory", "Parameters, memory, speed and "
                                   f"{metric} per method and rank, means over seeds (MB = 1e6 bytes)",
                                   csv=agg)
    png = breakdown_plot(agg, shown, os.path.join(out_dir, "memory_breakdown.png"))
    if png:
        paths["memory_breakdown"] = png
    summary, caption = summary_table(agg, keys, shown, metric, rank)
    paths["summary"] = tables.write(summary, out_dir, "summary", caption)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="reports/memory")
    parser.add_argument("--metric", default="auto")
    parser.add_argument("--rank", type=int, help="LoRA/QLoRA rank of the summary rows (default: closest to 8)")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    args = parser.parse_args(argv)
    runs = filter_rows(collect(args.results).runs, args.where)
    metric = tables.choose_metric(runs, args.metric)
    paths = write_all(runs, args.out, metric, args.rank)
    for name in ("memory", "summary"):
        if name in paths:
            with open(paths[name]["md"]) as f:
                print(f.read())


if __name__ == "__main__":
    main()
