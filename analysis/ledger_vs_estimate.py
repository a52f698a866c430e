"""Each run's measured memory ledger beside the analytic estimate for the same config and step shape.

    python -m analysis.ledger_vs_estimate                    # short CPU runs of the tiny models
    python -m analysis.ledger_vs_estimate --models tiny-bert tiny-llama minilm-l6 smollm2-135m
    python -m analysis.ledger_vs_estimate --records results  # existing records instead

A short run is a real `lab-train` job (Trainer, first step measured with saved-tensor hooks,
optimizer state read after training) per model x method, with gradient checkpointing off and on.
Its record's `memory` entry holds the ledger, and its `measured_steps` the estimate for the same
config at the measured step's shape (`lab.ledger.estimate_for_record`). Both are printed side by side, in
bytes, with the estimate's relative error. Tolerances the tests enforce: weights + gradients +
optimizer state within 1%, saved activations within 15%.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile

METHODS = ("full", "lora", "qlora")
WGO_TOLERANCE, ACTIVATION_TOLERANCE = 0.01, 0.15
SHORT_RUN = ["logger=none", "trainer.max_steps=2", "trainer.batch_size=8", "trainer.eval_batch_size=16",
             "trainer.logging_steps=1", "skip_finished=false"]
SMALL_DATA = {"synthetic-cls": "dataset.sizes={train: 32, validation: 16, test: 16}",
              "synthetic-lm": "dataset.sizes={train: 32, validation: 16, test: 16}"}
# The pretrained ones are slow on a CPU: smaller batches.
HEAVY = {"minilm-l6": ["trainer.batch_size=4"], "smollm2-135m": ["trainer.batch_size=2"]}


def short_run(model: str, method: str, results: str, overrides=()) -> dict:
    """One real training run of `model` with `method`; returns its record."""
    from lab import accounting
    from lab.train import run

    task = "cls" if model in ("tiny-bert", "minilm-l6") or model.startswith("roberta") else "lm"
    dataset = f"synthetic-{task}"
    extra = SHORT_RUN + [SMALL_DATA[dataset], f"dataset={dataset}", f"paths.results={results}"]
    cfg = accounting.compose(model, method, None if method == "full" else 4, None,
                             extra + HEAVY.get(model, []) + list(overrides))
    record = run(cfg)
    if record is None or record.get("status") != "ok":
        raise RuntimeError(f"{model} {method} {list(overrides)}: run failed: {record and record.get('error')}")
    return record


def compare(record: dict) -> dict:
    """Ledger vs estimate of one record, in bytes, with relative errors (estimate / measured - 1)."""
    from lab.ledger import estimate_for_record

    memory = record["memory"]
    est = estimate_for_record(record)
    step = (memory.get("measured_steps") or [{}])[0]
    measured_weights = sum(memory["weights"].values())
    optimizer = sum(memory["optimizer_state"].values())
    config = record.get("config", {})
    row = {
        "run": record["run_id"], "model": record["model"], "method": record["method"], "rank": record["rank"],
        "checkpointing": bool(config.get("trainer", {}).get("gradient_checkpointing")),
        "batch": step.get("batch"), "seq_len": step.get("seq_len"), "padded": step.get("padded"),
        "weights": (measured_weights, est["weights_total"]),
        "gradients": (memory["gradients"], est["gradients"]),
        "optimizer": (optimizer, est["optimizer_state"]),
        "weights+gradients+optimizer": (measured_weights + memory["gradients"] + optimizer,
                                        est["weights_gradients_optimizer"]),
        "activations": (memory["activations"], est.get("activations")),
        "estimate_error": est.get("error") or est.get("activations_error"),
        "peak_measured": memory.get("peak", {}),
    }
    for key in ("weights", "gradients", "optimizer", "weights+gradients+optimizer", "activations"):
        measured, estimated = row[key]
        row[f"{key} error"] = (estimated / measured - 1) if measured and estimated is not None else None
    return row


def within_tolerance(row: dict) -> bool:
    wgo, act = row["weights+gradients+optimizer error"], row["activations error"]
    return wgo is not None and act is not None and abs(wgo) <= WGO_TOLERANCE and abs(act) <= ACTIVATION_TOLERANCE


def _error(e: float | None) -> str:
    return "n/a" if e is None else f"{e:+.4%}"


def render(rows: list[dict]) -> str:
    lines = ["| model | method | GC | batch x seq | weights + grads + optimizer: measured / estimated (error) "
             "| saved activations: measured / estimated (error) | peak above baseline (device, measured) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        wm, we = r["weights+gradients+optimizer"]
        am, ae = r["activations"]
        peak = r["peak_measured"]
        peak_value = peak.get("peak_rss_above_baseline", peak.get("peak_allocated_above_baseline"))
        method = r["method"] if r["rank"] is None else f"{r['method']} r={r['rank']}"
        shape = f"{r['batch']} x {r['seq_len']}" + (" (padded)" if r["padded"] else "")
        peak_text = "n/a" if peak_value is None else f"{peak_value:,}"
        lines.append(f"| {r['model']} | {method} | {'on' if r['checkpointing'] else 'off'} | {shape} "
                     f"| {wm:,} / {we:,} ({_error(r['weights+gradients+optimizer error'])}) "
                     f"| {am:,} / {ae:,} ({_error(r['activations error'])}) "
                     f"| {peak_text} ({peak.get('device', '?')}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-bert", "tiny-llama"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="gradient checkpointing settings to run (default: off on)")
    parser.add_argument("--records", help="compare the records under this results folder instead of running")
    parser.add_argument("--out", default="reports", help="output folder for ledger_vs_estimate.md (default: reports)")
    args = parser.parse_args(argv)
    records = []
    if args.records:
        for path in sorted(glob.glob(os.path.join(args.records, "**", "result.json"), recursive=True)):
            with open(path) as f:
                record = json.load(f)
            if record.get("status") == "ok" and record.get("memory", {}).get("measured_steps"):
                records.append(record)
    else:
        with tempfile.TemporaryDirectory(prefix="ledger-") as results:
            for model in args.models:
                for method in args.methods:
                    for checkpointing in args.checkpointing:
                        gc = "true" if checkpointing == "on" else "false"
                        records.append(short_run(model, method, results, [f"trainer.gradient_checkpointing={gc}"]))
    rows = [compare(r) for r in records]
    text = ("Bytes. Measured: lab.ledger on the run's first training step (activations) and its real optimizer "
            "(state); estimated: lab.accounting from the architecture, at the measured step's shape. "
            "Error = estimated / measured - 1. GC = gradient checkpointing.\n\n" + render(rows) + "\n")
    failing = [r["run"] for r in rows if not within_tolerance(r)]
    text += (f"\n{len(rows) - len(failing)} of {len(rows)} runs within tolerance (weights + gradients + optimizer "
             f"{WGO_TOLERANCE:.0%}, activations {ACTIVATION_TOLERANCE:.0%})"
             + (f"; outside: {', '.join(failing)}" if failing else "") + ".\n")
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ledger_vs_estimate.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
