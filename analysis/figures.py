"""The report's figures: one colour per method in every figure, collapsed runs as hollow markers,
a chance line, rank on a log-2 axis, human labels. Each function writes one PNG and returns its name."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display here, and none needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from analysis.cells import Cell, method_colour, method_labels  # noqa: E402


def save(fig, folder: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=110)
    plt.close(fig)
    return name


def _rank_axis(ax, ranks: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ranks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(r) for r in ranks])
    ax.set_xlabel("LoRA rank r (log 2 scale)")


def rank_plot(cells: list[Cell], metric_label: str, chance: float | None, folder: str) -> str | None:
    """Test score against rank at each cell's chosen learning rate: mean and 95% t interval over the
    runs that learned, each run a dot, collapsed runs (any learning rate) hollow; full FT a band."""
    adapters = [c for c in cells if not pd.isna(c.rank)]
    if not adapters:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(c.method for c in adapters):
        mine = [c for c in adapters if c.method == method and c.scores()]
        _method_line(ax, mine, method)
        _collapsed_points(ax, [c for c in adapters if c.method == method], method, lambda c: c.rank)
    full = next((c for c in cells if c.method == "full" and c.scores()), None)
    if full is not None:
        est = full.estimate()
        ax.axhline(est.value, color=method_colour("full"), label=f"{full.method_label} (mean, 95% t band)")
        if not math.isnan(est.low):
            ax.axhspan(est.low, est.high, color=method_colour("full"), alpha=0.12)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance: majority class share ({chance:.1f})")
    _rank_axis(ax, sorted({int(c.rank) for c in adapters}))
    ax.set_ylabel(metric_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, folder, "rank_vs_score.png")


def _method_line(ax, cells: list[Cell], method: str) -> None:
    if not cells:
        return
    colour, ranks = method_colour(method), [c.rank for c in cells]
    estimates = [c.estimate() for c in cells]
    means = [e.value for e in estimates]
    lows = [e.value - e.low if not math.isnan(e.low) else 0 for e in estimates]
    highs = [e.high - e.value if not math.isnan(e.high) else 0 for e in estimates]
    ax.errorbar(ranks, means, yerr=[lows, highs], color=colour, marker="o", capsize=3,
                label=f"{cells[0].method_label} (mean, 95% t interval)")
    for cell in cells:
        ax.scatter([cell.rank] * len(cell.scores()), list(cell.scores().values()), color=colour, s=9, alpha=0.5)


def _collapsed_points(ax, cells: list[Cell], method: str, x_of) -> None:
    xs, ys = [], []
    column = None
    for cell in cells:
        column = f"metrics.{cell.metric}"
        collapsed = cell.runs[cell.runs["health"] == "collapsed"]
        xs += [x_of(cell)] * len(collapsed)
        ys += [v * 100 if "accuracy" in column or "f1" in column else v for v in collapsed.get(column, [])]
    if xs:
        ax.scatter(xs, ys, facecolors="none", edgecolors=method_colour(method), s=40,
                   label=f"{method_labels(cells).get(method, method)}: collapsed run (any lr)")


def curves_plot(cells: list[Cell], floor: float | None, folder: str) -> str | None:
    """Train loss against step per cell: the runs at the chosen rate solid, collapsed runs dashed."""
    drawn = [c for c in cells if "curve" in c.runs and c.runs["curve"].map(_has_points).any()]
    if not drawn:
        return None
    methods = list(dict.fromkeys(c.method for c in drawn))
    ranks = sorted({-1 if pd.isna(c.rank) else int(c.rank) for c in drawn})
    fig, axes = plt.subplots(len(methods), len(ranks), figsize=(2.6 * len(ranks), 2.2 * len(methods)),
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for cell in drawn:
        ax = axes[methods.index(cell.method)][ranks.index(-1 if pd.isna(cell.rank) else int(cell.rank))]
        _cell_curves(ax, cell, floor)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("train loss")
    return save(fig, folder, "loss_curves.png")


def _has_points(curve) -> bool:
    return isinstance(curve, list) and any("loss" in point for point in curve)


def _cell_curves(ax, cell: Cell, floor: float | None) -> None:
    ax.set_visible(True)
    colour = method_colour(cell.method)
    chosen = set(cell.chosen_runs["run_id"])
    for _, run in cell.runs.iterrows():
        points = [p for p in run["curve"] if "loss" in p] if _has_points(run.get("curve")) else []
        if not points:
            continue
        steps, losses = [p["step"] for p in points], [p["loss"] for p in points]
        if run["health"] == "collapsed":
            ax.plot(steps, losses, color="grey", linestyle="--", linewidth=0.8)
        elif run["run_id"] in chosen:
            ax.plot(steps, losses, color=colour, linewidth=1)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", linewidth=0.8)
    lr = f", lr {cell.lr:g}" if cell.lr is not None else ""
    ax.set_title(f"{cell.label}{lr}", fontsize=8)
    ax.grid(alpha=0.3)


def pareto_plot(points: pd.DataFrame, metric_label: str, costs: list[tuple[str, str, str]], folder: str) -> str | None:
    """Score against each cost, the frontier joined; a method's points in its colour."""
    if not len(points):
        return None
    fig, axes = plt.subplots(1, len(costs), figsize=(6 * len(costs), 4.5), squeeze=False)
    for ax, (cost, label, scale) in zip(axes[0], costs):
        for method, group in points.groupby("method", sort=False):
            ax.scatter(group[cost], group["mean"], color=method_colour(method),
                       label=group["method_label"].iloc[0] if "method_label" in group else method)
            for _, row in group.iterrows():
                ax.annotate(row["label"], (row[cost], row["mean"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        front = points[points[f"frontier_{cost}"]].sort_values(cost)
        ax.plot(front[cost], front["mean"], color="grey", linestyle="--", label="Pareto frontier")
        ax.set(xscale=scale, xlabel=label, ylabel=metric_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, folder, "pareto.png")


def memory_plot(table: pd.DataFrame, categories: list[str], folder: str) -> str | None:
    """The deterministic ledger per cell as stacked bars (MB = 1e6 bytes)."""
    if not len(table):
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(table)), 4.5))
    bottom = pd.Series(0.0, index=table.index)
    for category in categories:
        values = table[category].fillna(0)
        ax.bar(table["Cell"], values, bottom=bottom, label=category)
        bottom += values
    ax.set_ylabel("MB (1e6 bytes)")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, folder, "memory_ledger.png")
