"""Published figures beside ours: an exact match where a run's setting is a paper's (LoRA paper Table 2:
RoBERTa on GLUE, r=8, alpha=16 on q,v), else the closest published rank table, with what differs."""

from __future__ import annotations

import os
import re

import pandas as pd
import yaml

from analysis import stats
from analysis.cells import Cell
from analysis.collect import target_modules
from analysis.document import Section

REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference", "lora_paper.yaml")
ACCURACY_COLUMNS = ("mnli", "sst2", "mrpc", "qnli", "qqp", "rte")


def _paper() -> dict:
    with open(REFERENCE) as f:
        return yaml.safe_load(f)


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _is_qv(row: pd.Series) -> bool:
    modules = target_modules(row)
    qv = row.get("config.model.target_sets.qv")
    return modules is not None and isinstance(qv, list) and sorted(modules) == sorted(qv)


def _matching(runs: pd.DataFrame, ref: dict, column: str) -> pd.DataFrame:
    match = runs[(runs["model"].map(_norm) == _norm(ref["model"])) & (runs["dataset"].map(_norm) == _norm(column))
                 & (runs["method"] == ref["method"])]
    if ref["method"] == "lora" and len(match):
        match = match[(match["rank"] == ref["rank"]) & (match["config.method.alpha"] == ref["alpha"])]
        match = match[match.apply(_is_qv, axis=1)] if len(match) else match
    return match


def table2_matches(runs: pd.DataFrame) -> pd.DataFrame:
    """Our runs whose setting is one of the LoRA paper's Table 2 rows (GLUE dev, median of 5 seeds)."""
    paper = _paper()
    table = paper["table2_glue"]
    learned = runs[runs["learned"] & runs.get("metrics.test_accuracy", pd.Series(dtype=float)).notna()]
    rows = []
    for ref in table["rows"]:
        for column, theirs in zip(table["columns"], ref["scores"]):
            match = _matching(learned, ref, column) if column in ACCURACY_COLUMNS and len(learned) else learned.iloc[0:0]
            if not len(match):
                continue
            ours = list(match["metrics.test_accuracy"] * 100)
            rows.append({"Model": ref["model"], "Dataset": column, "Method": ref["method"],
                         "Ours: median": round(float(pd.Series(ours).median()), 2),
                         "Ours: mean [95% t]": stats.mean_interval(ours, bounds=(0.0, 100.0)).text(), "Published": theirs,
                         "Differs": "our test split vs their GLUE dev; our steps and learning rate"})
    return pd.DataFrame(rows)


def rank_context(cells: list[Cell]) -> pd.DataFrame:
    """Our LoRA (q,v) rank curve beside the LoRA paper's Table 6 (GPT-3 175B, MultiNLI-matched, q,v)."""
    paper = _paper()["table6_rank_vs_accuracy"]
    published = next(r for r in paper["rows"] if r["dataset"] == "mnli" and r["targets"] == ["q", "v"])
    by_rank = dict(zip(paper["ranks"], published["acc"]))
    ours = {int(c.rank): c.estimate().text() for c in cells if c.method == "lora" and c.scores()
            and c.runs["targets"].iloc[0] == "qv"}
    ranks = sorted(set(by_rank) | set(ours))
    return pd.DataFrame([{"Rank": r, "Ours: LoRA (q,v)": ours.get(r, ""), "LoRA paper Table 6": by_rank.get(r, "")}
                         for r in ranks])


def section(runs: pd.DataFrame, cells: list[Cell]) -> Section:
    out = Section("Published figures beside ours")
    exact = table2_matches(runs)
    if len(exact):
        out.table(exact, "Where a run's setting is a row of the LoRA paper's Table 2 (accuracy, %).")
    context = rank_context(cells)
    if len(context) and context["Ours: LoRA (q,v)"].astype(bool).any():
        out.table(context, "Rank against accuracy (%), ours beside the LoRA paper's Table 6. What differs: the "
                           "model (GPT-3 175B there), the task (MultiNLI-matched validation there), the training "
                           "length and learning rates. Their point is the shape: flat from r=1 (within ±0.1, their "
                           "stated spread). Ours is judged by the claims above.")
    if not len(exact):
        out.text("No run has a published setting (e.g. `lab-train -m +sweep=lora_glue`: RoBERTa on GLUE, r=8, "
                 "alpha=16 on q,v, needs the hub and a GPU).")
    return out
