"""Every table and plot of a results store, or of one sweep, into one folder; prints the Markdown.

    python -m analysis.report --results results --sweep multirun/quick --out reports/quick
    python -m analysis.report --results results --out reports/all --metric test_perplexity
    python -m analysis.report --results results --out reports/glue --where model=roberta-base

--sweep takes a sweep folder (or its sweep_summary.json, which the `grouped` sweeper writes) and
keeps that sweep's runs. Writes into --out: report.md (all of it), runs.csv (every collected
record, flattened), rank_vs_accuracy.{md,tex,csv,png}, memory.{md,tex,csv}, memory_breakdown.png,
summary.{md,tex,csv} and, where a run matches a paper's setting, published.{md,tex,csv}. The
tables are generated from the records each time; never edit them by hand.

--tune-lr, for a sweep that tries several learning rates per cell (lab/conf/sweep/rank_vs_accuracy_tuned.yaml),
adds analysis.tuned: per cell the learning rate with the best mean validation score, its test
result beside the default learning rate's with bootstrap intervals and the difference to full
fine-tuning, the seed's claims judged held / not held, and the Pareto plots (tuned.{md,tex,csv,png},
tuned_grid.*, claims.csv, pareto.{csv,png}):

    python -m analysis.report --results results --sweep multirun/rank_vs_accuracy_tuned \
        --out reports/rank_vs_accuracy_tuned --tune-lr
"""

from __future__ import annotations

import argparse
import json
import os


from analysis import memory_comparison, published, rank_vs_accuracy, tables, tuned
from analysis.collect import Collection, collect, describe, filter_rows
from hydra_plugins.lab_sweeps.grouped_sweeper import SUMMARY_FILE


def read_sweep(path: str) -> dict:
    if os.path.isdir(path):
        path = os.path.join(path, SUMMARY_FILE)
    if not os.path.exists(path):
        raise SystemExit(f"--sweep: no {SUMMARY_FILE} at {path} (it is written when a sweep's jobs have run)")
    with open(path) as f:
        return json.load(f)


def select_sweep(collection: Collection, sweep: dict) -> tuple[Collection, list[str]]:
    """The sweep's runs, and a note per job that has no record to show."""
    ids = {job["run_id"] for job in sweep["jobs"] if job.get("run_id")}
    runs = collection.runs[collection.runs["run_id"].isin(ids)]
    found = set(runs["run_id"])
    notes = [f"{job['status']}: {' '.join(job['overrides'])}" + (f" ({job['error']})" if job.get("error") else "")
             for job in sweep["jobs"] if not job.get("run_id") or job["run_id"] not in found]
    if sweep.get("jobs_total", len(sweep["jobs"])) > len(sweep["jobs"]):
        notes.append(f"{sweep['jobs_total'] - len(sweep['jobs'])} jobs of the sweep have not run yet")
    problems = [p for p in collection.problems if os.path.basename(os.path.dirname(p["path"])) in ids
                or os.path.basename(p["path"]) in ids]
    return Collection(runs, problems), notes


def build(collection: Collection, out: str, metric: str = "auto", rank: int | None = None,
          sweep_notes: list[str] | None = None, title: str = "Report", tune_lr: bool = False) -> str:
    os.makedirs(out, exist_ok=True)
    runs = collection.runs
    runs.to_csv(os.path.join(out, "runs.csv"), index=False)
    metric = tables.choose_metric(runs, metric)
    parts = [f"# {title}", "", "## Records", "", "```", describe(collection), "```"]
    if sweep_notes:
        parts += ["", "Sweep jobs without a record:", "", *[f"- {n}" for n in sweep_notes]]

    if tune_lr:
        section, _ = tuned.write_all(tuned.build(runs, metric), out)
        parts += ["", "## Learning rate chosen per cell on validation", "", section]

    rank_table = rank_vs_accuracy.build(runs, metric)
    rank_paths = rank_vs_accuracy.write(rank_table, out)
    parts += ["", "## Rank vs " + metric, "", rank_table.markdown()]
    if rank_table.left_out:
        parts += ["", f"({rank_table.left_out} ok records have no {metric} and are left out.)"]
    if "png" in rank_paths:
        parts += ["", f"![{metric} vs rank](rank_vs_accuracy.png)"]

    memory_paths = memory_comparison.write_all(runs, out, metric, rank)
    for name, heading in (("memory", "Memory, parameters and speed"), ("summary", "The seed's summary, measured")):
        if name in memory_paths:
            with open(memory_paths[name]["md"]) as f:
                parts += ["", f"## {heading}", "", f.read().strip()]
        if name == "memory" and "memory_breakdown" in memory_paths:
            parts += ["", "![memory breakdown](memory_breakdown.png)"]

    paper, caption = published.build(runs)
    parts += ["", "## Published figures"]
    if len(paper):
        tables.write(paper, out, "published", caption)
        parts += ["", caption, "", tables.to_markdown(paper)]
    else:
        parts += ["", "No run matches a published setting (e.g. `lab-train -m +sweep=lora_glue`: RoBERTa on GLUE, "
                      "r=8, alpha=16 on q,v)."]
    markdown = "\n".join(parts) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the results store (paths.results)")
    parser.add_argument("--sweep", help="a sweep folder (hydra.sweep.dir) or its sweep_summary.json: only its runs")
    parser.add_argument("--out", required=True, help="folder for the tables, plots and report.md")
    parser.add_argument("--metric", default="auto", help="a metrics.* key (auto: test_accuracy, or "
                                                          "test_perplexity for causal-LM runs)")
    parser.add_argument("--rank", type=int, help="LoRA/QLoRA rank of the summary rows (default: closest to 8)")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    parser.add_argument("--tune-lr", action="store_true", help="choose each cell's learning rate on validation "
                                                                 "and compare with the default (analysis.tuned)")
    parser.add_argument("--wandb-project", help="also collect this W&B project (needs W&B online)")
    parser.add_argument("--wandb-entity")
    args = parser.parse_args(argv)

    collection = collect(args.results, args.wandb_project, args.wandb_entity)
    notes, title = None, f"Report: {args.results}"
    if args.sweep:
        collection, notes = select_sweep(collection, read_sweep(args.sweep))
        title = f"Report: sweep {args.sweep}"
    collection = Collection(filter_rows(collection.runs, args.where), collection.problems)
    print(build(collection, args.out, args.metric, args.rank, notes, title, args.tune_lr))


if __name__ == "__main__":
    main()
