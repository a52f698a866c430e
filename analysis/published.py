"""Our numbers beside published ones, for runs whose setting matches a paper's.

    python -m analysis.published --results results --out reports/published

Matched today: the LoRA paper's Table 2 (Hu et al. 2021, v2; analysis/reference/lora_paper.yaml):
RoBERTa base/large on GLUE, full fine-tuning, and LoRA at the paper's rank and alpha on W_q, W_v.
A run matches a row when its model and dataset carry the paper's names (roberta-base, sst2,
mnli, ...), its method is the row's, and for LoRA its rank, alpha and target set (the model's
`qv` set) are the row's. Only accuracy columns compare (the paper's CoLA is Matthews correlation
and STS-B Pearson correlation, which the suite does not record). The paper reports the median
over five seeds of the GLUE dev set; ours is the dataset's test split (for sst2 and mnli, GLUE's
labelled validation split), so both median and mean are shown, and the difference is ours
(median) minus theirs.
"""

from __future__ import annotations

import argparse
import os
import re

import pandas as pd
import yaml

from analysis import tables
from analysis.collect import collect, filter_rows, target_modules

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "lora_paper.yaml")
ACCURACY_COLUMNS = ("mnli", "sst2", "mrpc", "qnli", "qqp", "rte")


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _is_qv(row: pd.Series) -> bool:
    modules = target_modules(row)
    qv = row.get("config.model.target_sets.qv")
    return modules is not None and isinstance(qv, list) and sorted(modules) == sorted(qv)


def lora_table2(df: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    with open(reference) as f:
        paper = yaml.safe_load(f)
    table = paper["table2_glue"]
    ok = df[(df["status"] == "ok")]
    if "metrics.test_accuracy" not in ok or not len(ok):
        return pd.DataFrame()
    ok = ok[ok["metrics.test_accuracy"].notna()]
    rows = []
    for ref in table["rows"]:
        for column, theirs in zip(table["columns"], ref["scores"]):
            if column not in ACCURACY_COLUMNS:
                continue
            match = ok[(ok["model"].map(_norm) == _norm(ref["model"])) & (ok["dataset"].map(_norm) == _norm(column))
                       & (ok["method"] == ref["method"])]
            if ref["method"] == "lora":
                match = match[(match["rank"] == ref["rank"]) & (match["config.method.alpha"] == ref["alpha"])]
                match = match[match.apply(_is_qv, axis=1)] if len(match) else match
            if not len(match):
                continue
            ours = match["metrics.test_accuracy"] * 100
            rows.append({
                "model": ref["model"], "dataset": column,
                "method": ref["method"] + (f" r={ref['rank']} alpha={ref['alpha']} (q,v)" if ref["method"] == "lora" else ""),
                "ours: median": round(float(ours.median()), 2),
                "ours: mean ± std (n)": tables.mean_std(ours.mean(), ours.std(), len(ours)),
                "published": theirs,
                "difference (ours median - published)": round(float(ours.median()) - theirs, 2),
                "source": f"{paper['source']}, Table 2",
            })
    return pd.DataFrame(rows)


def build(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    table = lora_table2(df)
    caption = ("Ours beside published accuracy (%) where the setting matches: LoRA paper Table 2 "
               "(GLUE dev, median of 5 seeds) vs our test split.")
    return table, caption


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="reports/published")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    args = parser.parse_args(argv)
    table, caption = build(filter_rows(collect(args.results).runs, args.where))
    if not len(table):
        print("no run matches a published setting")
        return
    tables.write(table, args.out, "published", caption)
    print(f"{caption}\n\n{tables.to_markdown(table)}")


if __name__ == "__main__":
    main()
