"""Records -> one DataFrame -> cells -> sections -> one report (Markdown and a self-contained HTML page).

    python -m analysis report --results results --sweep multirun/quick --out reports/quick
    python -m analysis report --results results --out reports/all --metric test_perplexity

--sweep takes a sweep folder (or its sweep_summary.json, which the `grouped` sweeper writes) and
keeps that sweep's runs. Writes into --out: report.md, report.html (figures embedded), the PNGs,
runs.csv (every record, flattened), cells.csv (one row per cell) and claims.csv. Everything is
generated from the records each time; never edit it by hand.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd

from analysis import cells as cellmod
from analysis import document
from analysis.collect import Collection, collect, filter_rows
from analysis.rules import MARGIN, Rules
from lab.errors import ConfigError
from lab.health import IMBALANCED
from analysis.sections import (answer, budget, claims, curves, learning_rates, memory, pareto, published, results,
                               runs, setup)
from lab.sweep import SUMMARY_FILE, grid_size, read_summary, summary_path


def read_sweep(path: str) -> dict:
    sweep = read_summary(path)
    if sweep is None:
        raise SystemExit(f"--sweep: no readable {SUMMARY_FILE} at {summary_path(path)} (it is written when a "
                         "sweep's jobs have run)")
    if sweep.get("grid_jobs") is None:
        sweep["grid_jobs"] = grid_size(path if os.path.isdir(path) else os.path.dirname(path))
    return sweep


def select_sweep(collection: Collection, sweep: dict) -> tuple[Collection, list[str]]:
    """The sweep's runs, and a note per job that has no record to show."""
    ids = {job["run_id"] for job in sweep["jobs"] if job.get("run_id")}
    frame = collection.runs[collection.runs["run_id"].isin(ids)]
    found = set(frame["run_id"])
    notes = [f"{job['status']}: {' '.join(job['overrides'])}" + (f" ({job['error']})" if job.get("error") else "")
             for job in sweep["jobs"] if not job.get("run_id") or job["run_id"] not in found]
    if sweep.get("jobs_total", len(sweep["jobs"])) > len(sweep["jobs"]):
        notes.append(f"{sweep['jobs_total'] - len(sweep['jobs'])} jobs of the sweep have not run yet")
    problems = [p for p in collection.problems if os.path.basename(os.path.dirname(p["path"])) in ids
                or os.path.basename(p["path"]) in ids]
    return Collection(frame, problems, collection.notes), notes


def choose_metric(frame: pd.DataFrame, metric: str) -> str:
    """`auto`: test accuracy where runs have it (classification) and the labels are balanced; macro-F1
    where they are imbalanced (imbalance_note); else test loss (causal LM)."""
    if metric != "auto":
        return metric
    if imbalance_note(frame, "test_macro_f1"):
        return "test_macro_f1"
    for candidate in ("test_accuracy", "test_loss"):
        if f"metrics.{candidate}" in frame and frame[f"metrics.{candidate}"].notna().any():
            return candidate
    return "test_accuracy"


def imbalance_note(frame: pd.DataFrame, metric: str) -> str | None:
    """Why the report leads with macro-F1: the validation labels' majority share (from the runs' health
    evidence) is above lab.health.IMBALANCED, where accuracy rewards always answering that class."""
    share = pd.to_numeric(frame.get("health_detail.majority_share", pd.Series(dtype=float)), errors="coerce").dropna()
    if metric != "test_macro_f1" or not len(share) or share.max() <= IMBALANCED \
            or f"metrics.{metric}" not in frame or frame[f"metrics.{metric}"].isna().all():
        return None
    return (f"The labels are imbalanced (the most frequent class is {100 * share.max():.0f} % of the validation rows): "
            "accuracy would credit a model that always answers that class, so this report leads with macro-F1, "
            "which weighs every class equally (pass --metric test_accuracy for accuracy).")


def build(collection: Collection, out: str, title: str, metric: str = "auto", sweep: dict | None = None,
          sweep_notes: list[str] | None = None, rules: Rules | None = None) -> dict:
    """Write the report into `out`; returns its paths and the main table.

    Every file is written into a temporary folder beside `out`, which then takes `out`'s place in one
    step (document.replace_folder): a report killed while it writes leaves the previous one whole."""
    document.check_out_folder(out)
    with document.staging(out) as staging:
        built = _build_into(staging, collection, title, metric, sweep, sweep_notes, rules or Rules())
        document.replace_folder(staging, out)
    return {**built, "md": os.path.join(out, "report.md"), "html": os.path.join(out, "report.html")}


def _build_into(out: str, collection: Collection, title: str, metric: str, sweep: dict | None,
                sweep_notes: list[str] | None, rules: Rules) -> dict:
    frame = collection.runs
    metric = choose_metric(frame, metric)
    cells = cellmod.build(frame, metric)
    claims_section, claims_frame = claims.section(cells, rules)
    answer_section = answer.section(cells, metric, rules)
    if imbalance_note(frame, metric):
        answer_section.parts.insert(0, imbalance_note(frame, metric))
    sections = [setup.section(frame, rules), answer_section, results.section(cells, frame, metric, out),
                claims_section,
                learning_rates.section(cells, frame, sweep), budget.section(cells, metric, out),
                runs.section(frame, metric, (sweep_notes or []) + collection.notes, collection.problems),
                curves.section(cells, frame, out), memory.section(cells, out), pareto.section(cells, metric, out),
                published.section(frame, cells)]
    paths = document.write(out, title, [s for s in sections if s is not None])
    frame.to_csv(os.path.join(out, "runs.csv"), index=False)
    claims_frame.to_csv(os.path.join(out, "claims.csv"), index=False)
    main = results.main_table(cells)
    main.to_csv(os.path.join(out, "main_table.csv"), index=False)
    ledger = memory.ledger_table(cells)
    ledger.to_csv(os.path.join(out, "memory_ledger.csv"), index=False)
    return {**paths, "main_table": main, "ledger": ledger, "claims": claims_frame, "metric": metric}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m analysis report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the results store (paths.results)")
    parser.add_argument("--sweep", help="a sweep folder (hydra.sweep.dir) or its sweep_summary.json: only its runs")
    parser.add_argument("--out", help="folder for report.md, report.html, figures and CSVs (default: "
                                      "reports/<the sweep folder's name>)")
    parser.add_argument("--metric", default="auto", help="a metrics.* key (auto: test_accuracy, or test_loss for "
                                                          "causal-LM runs)")
    parser.add_argument("--margin", type=_margin, default=MARGIN,
                        help=f"the decision margin in the metric's points (default {MARGIN:g}): similar = equivalent "
                             "within it, competitive = non-inferior at it")
    parser.add_argument("--where", action="append", default=[], help="keep rows with COLUMN=VALUE (repeatable)")
    parser.add_argument("--title", help="the report's title (default: the sweep or results folder)")
    parser.add_argument("--wandb-project", help="also collect this W&B project (needs W&B online)")
    parser.add_argument("--wandb-entity")
    parser.add_argument("--wandb-dir", help="also collect the offline runs of this local wandb/ folder")
    parser.add_argument("--wandb", choices=["auto", "yes", "no"], default="auto",
                        help="log the tables and the report to W&B in the sweep's group (auto: when the runs "
                             "logged to W&B)")
    parser.add_argument("--wandb-mode", default="auto", help="online / offline (auto: as the runs logged)")
    args = parser.parse_args(argv)
    collection = collect(args.results, args.wandb_project, args.wandb_entity, wandb_dir=args.wandb_dir)
    sweep, notes = None, []
    if args.sweep:
        sweep = read_sweep(args.sweep)
        collection, notes = select_sweep(collection, sweep)
    collection = Collection(filter_rows(collection.runs, args.where), collection.problems, collection.notes)
    if not args.out and not args.sweep:
        parser.error("--out is needed without --sweep")
    check_has_runs(collection, args.results, bool(args.sweep))
    sweep_folder = args.sweep if not args.sweep or os.path.isdir(args.sweep) else os.path.dirname(args.sweep)
    out = args.out or os.path.join("reports", os.path.basename(os.path.normpath(sweep_folder)))
    # The sweep's own name (its folder), not where this machine keeps it.
    named = os.path.basename(os.path.normpath(sweep_folder)) if args.sweep else args.results
    title = args.title or f"Report: {named}"
    built = build(collection, out, title, args.metric, sweep, notes, Rules(margin=args.margin))
    print(built["main_table"].to_markdown(index=False))
    if len(built["ledger"]):
        print("\nMemory ledger, MB = 1e6 bytes (exact bytes counted on a probe step at the run's longest batch):\n")
        print(built["ledger"][["Cell", "Weights", "Gradients", "Optimizer state", "Saved activations",
                               "Ledger total"]].to_markdown(index=False))
    print(f"\nwrote {built['md']} and {built['html']}")
    built["wandb"] = to_wandb(args, built, collection.runs, out, sweep_folder)
    return built


def _margin(text: str) -> float:
    try:
        return Rules(margin=float(text)).margin
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the margin is a positive number of the metric's points, e.g. 1")


def check_has_runs(collection: Collection, results: str, sweep: bool) -> None:
    """A report needs at least one record: say in one line why there is none."""
    if len(collection.runs):
        return
    if not os.path.isdir(results):
        raise ConfigError("--results", results, "an existing results folder (the runs' paths.results)")
    where = "the sweep's run ids" if sweep else results
    found = f"{len(collection.problems)} run folders without a readable record, e.g. " \
            f"{collection.problems[0]['problem']}: {collection.problems[0]['path']}" if collection.problems else "none"
    raise ConfigError("--results", results, f"a folder holding at least one run record ({where}: {found})")


def to_wandb(args, built: dict, frame: pd.DataFrame, out: str, sweep_folder: str | None) -> dict | None:
    """The report into W&B when asked, or (auto) when the runs logged there."""
    from analysis import wandb_report  # imports wandb: only for a report that goes there

    if args.wandb == "no" or (args.wandb == "auto" and not wandb_report.logged_to_wandb(frame)):
        return None
    fallback = os.path.basename(os.path.normpath(sweep_folder or out))
    uploaded = wandb_report.upload(built, frame, built["claims"], out, wandb_report.sweep_group(frame, fallback),
                                   args.wandb_mode)
    print(f"W&B: tables and report ({uploaded['mode']}) in group {uploaded['group']}: {uploaded['run_path']}")
    return uploaded
