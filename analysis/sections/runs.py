"""Runs by status and health, and every run that trained but learned nothing, by name."""

from __future__ import annotations

import pandas as pd

from analysis.document import Section

HEALTH_RULE = ("A run is *collapsed* when it trained without error but its validation predictions carry no "
               "information (lab/health.py): its validation accuracy is not above always answering the majority "
               "class (one-sided binomial test, 5 %) and its predictions are not associated with the labels "
               "(permutation test of the balanced accuracy, 5 %), so a run that beats the majority share, or gets a "
               "rare class right on imbalanced labels, is never called collapsed; a language model, when its "
               "validation loss is not below the untrained model's. Health is judged on validation, never test. "
               "Collapsed runs are listed here and drawn hollow; they enter no mean, claim, Pareto front or "
               "learning-rate choice.")


def collapsed_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    collapsed = runs[runs["health"] == "collapsed"].sort_values(["method", "rank", "lr", "seed"])
    column = f"metrics.{metric}"
    return pd.DataFrame({
        "Run": collapsed["run_id"], "Method": collapsed["method"],
        "Rank": collapsed["rank"].astype("Int64").astype(str).replace("<NA>", "–"),
        "lr": collapsed["lr"].map(lambda v: f"{v:g}"), "Seed": collapsed["seed"],
        metric: collapsed[column].round(4) if column in collapsed else None,
        "Why": collapsed.get("health_detail.reasons", pd.Series(dtype=object)).map(
            lambda r: "; ".join(r) if isinstance(r, list) else ""),
    })


def section(runs: pd.DataFrame, metric: str, sweep_notes: list[str], problems: list[dict]) -> Section:
    out = Section("Runs and their health")
    counts = runs.groupby(["status", "health"]).size().rename("runs").reset_index()
    out.table(counts, "Runs by status and health.")
    out.text(HEALTH_RULE)
    collapsed = collapsed_table(runs, metric)
    if len(collapsed):
        cells = collapsed.groupby(["Method", "Rank", "lr"]).ngroups
        out.table(collapsed, f"**{len(collapsed)} collapsed runs** in {cells} method x rank x learning-rate cells:")
    else:
        out.text("No run collapsed.")
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        out.table(failed[["run_id", "status", "error"]].rename(columns={"run_id": "Run"}), "Runs that did not finish:")
    if sweep_notes:
        out.text("Sweep jobs without a record:\n\n" + "\n".join(f"- {n}" for n in sweep_notes))
    if problems:
        out.text("Run folders without a usable record:\n\n" + "\n".join(f"- {p['problem']}: `{p['path']}`"
                                                                          for p in problems))
    return out
