"""Accuracy against cost, with the Pareto frontier: trainable parameters and measured memory.

Memory is the run's measured ledger total (`memory.ledger_total`: weights, buffers, gradients,
optimizer state and the activations saved for backward, counted from the tensors' storages), not
the process's resident set, which on the CPU also holds the allocator's cache and whatever an
earlier job of the same process left behind. A point is on the frontier when no other point costs
no more and scores at least as well, one of the two strictly.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from analysis import tables

COSTS = (("trainable_params", "trainable parameters", "log"),
         ("ledger_total_bytes", "measured ledger total (MB = 1e6 bytes)", "linear"))


def frontier(costs, scores, higher_is_better: bool = True) -> np.ndarray:
    """A boolean mask of the points no other point dominates (cost no higher, score no worse, one strictly)."""
    cost = np.asarray(costs, dtype=float)
    score = np.asarray(scores, dtype=float) * (1 if higher_is_better else -1)
    on = np.zeros(len(cost), dtype=bool)
    for i in range(len(cost)):
        if np.isnan(cost[i]) or np.isnan(score[i]):
            continue
        no_worse = (cost <= cost[i]) & (score >= score[i])
        better = (cost < cost[i]) | (score > score[i])
        on[i] = not np.any(no_worse & better)
    return on


def points(cells: pd.DataFrame, label) -> pd.DataFrame:
    """The validation-chosen cells as (label, rank, costs, mean, interval), frontier flags per cost."""
    tuned = cells[cells["view"] == "tuned"]
    out = pd.DataFrame({
        "method": [label(r) for _, r in tuned.iterrows()],
        "rank": tuned["rank"].to_numpy(),
        "lr": tuned["lr"].to_numpy(),
        "n": tuned["test_values"].map(len).to_numpy(),
        "mean": tuned["mean"].to_numpy(), "ci_low": tuned["ci_low"].to_numpy(), "ci_high": tuned["ci_high"].to_numpy(),
        "trainable_params": tuned["trainable_params"].to_numpy(),
        "ledger_total_bytes": tuned["ledger_total_bytes"].to_numpy(),
    })
    return out


def flag(frame: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    return frame.assign(**{f"frontier_{cost}": frontier(frame[cost], frame["mean"], higher_is_better)
                           for cost, _, _ in COSTS})


def plot(frame: pd.DataFrame, metric: str, path: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(frame):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    methods = list(dict.fromkeys(frame["method"]))
    for ax, (cost, axis_label, scale) in zip(axes, COSTS):
        x = frame[cost] / (tables.MB if cost.endswith("bytes") else 1)
        for i, method in enumerate(methods):
            here = frame["method"] == method
            errors = np.array([frame.loc[here, "mean"] - frame.loc[here, "ci_low"].fillna(frame.loc[here, "mean"]),
                               frame.loc[here, "ci_high"].fillna(frame.loc[here, "mean"]) - frame.loc[here, "mean"]])
            ax.errorbar(x[here], frame.loc[here, "mean"], yerr=errors, fmt="o", color=f"C{i}", capsize=3,
                        label=method)
            for xi, yi, rank in zip(x[here], frame.loc[here, "mean"], frame.loc[here, "rank"]):
                if not pd.isna(rank):
                    ax.annotate(f"r={int(rank)}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        on = frame[f"frontier_{cost}"].to_numpy()
        order = np.argsort(x[on].to_numpy())
        ax.step(x[on].to_numpy()[order], frame.loc[on, "mean"].to_numpy()[order], where="post", color="black",
                lw=1, ls=":", label="Pareto frontier")
        ax.scatter(x[on], frame.loc[on, "mean"], s=120, facecolors="none", edgecolors="black")
        ax.set_xscale(scale)
        ax.set_xlabel(axis_label + (" (log scale)" if scale == "log" else ""))
        ax.set_ylabel(tables.metric_label(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{metric} at the validation-chosen learning rate (95% bootstrap intervals) against cost", fontsize=11)
    return tables.save_figure(fig, path)
