"""Each run's measured memory ledger beside the analytic estimate for the same config and step shape.

    python -m bench.ledger_vs_estimate                    # short CPU runs of the tiny models, fp32 and bf16
    python -m bench.ledger_vs_estimate --models tiny-bert tiny-llama minilm-l6 smollm2-135m
    python -m bench.ledger_vs_estimate --records results  # existing records instead

A short run is a real `lab-train` job (`lab.train.run`: Trainer, first step measured with
saved-tensor hooks, optimizer state read after training) per model x method, with gradient
checkpointing off and on. Its record's `memory` entry holds the ledger, and its `measured_steps` the
estimate for the same config at the measured step's shape (`lab.memory.compare.estimate_for_record`).
`lab.memory.compare.compare` sets both side by side, in bytes, with the estimate's relative error.
Tolerances the tests enforce (`lab.memory.compare`): weights + gradients + optimizer state within
1%, saved activations within 15%.

The grid of short runs is just runs, and could be a sweep: a `grouped` sweep (sweeps/,
hydra_plugins/lab_sweeps) with SHORT_RUN's settings, `params` trainer.gradient_checkpointing=false,true,
and one group per model x {full, adapters} (each group pairing `model` with its synthetic dataset and
HEAVY batch size, the adapters as `method=lora,qlora rank=4`), then `--records` on its results. The
loop stays: the tests call `short_run` for single runs, and a failed run raises here at once.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

from lab.memory.compare import ACTIVATION_TOLERANCE, WGO_TOLERANCE, compare, within_tolerance
from lab.memory.estimate import config_for
from lab.record import RECORD_FILE, read_record
from lab.train import run

METHODS = ("full", "lora", "qlora")
SHORT_RUN = ["logger=none", "trainer.max_steps=2", "trainer.batch_size=8", "trainer.eval_batch_size=16",
             "trainer.logging_steps=1", "skip_finished=false"]
SMALL_DATA = {"synthetic-cls": "dataset.sizes={train: 32, validation: 16, test: 16}",
              "synthetic-lm": "dataset.sizes={train: 32, validation: 16, test: 16}"}
# The pretrained ones are slow on a CPU: smaller batches.
HEAVY = {"minilm-l6": ["trainer.batch_size=4"], "smollm2-135m": ["trainer.batch_size=2"]}


def short_run(model: str, method: str, results: str, overrides=()) -> dict:
    """One real training run of `model` with `method`; returns its record."""
    task = "cls" if model in ("tiny-bert", "minilm-l6") or model.startswith("roberta") else "lm"
    dataset = f"synthetic-{task}"
    extra = SHORT_RUN + [SMALL_DATA[dataset], f"dataset={dataset}", f"paths.results={results}"]
    cfg = config_for(model, method, None if method == "full" else 4, None, extra + HEAVY.get(model, []) + list(overrides))
    record = run(cfg)
    if record is None or record.get("status") != "ok":
        raise RuntimeError(f"{model} {method} {list(overrides)}: run failed: {record and record.get('error')}")
    return record


def _error(e: float | None) -> str:
    return "n/a" if e is None else f"{e:+.4%}"


def render_row(r: dict) -> str:
    wm, we = r["weights+gradients+optimizer"]
    am, ae = r["activations"]
    peak = r["peak_measured"]
    peak_value = peak.get("peak_rss_above_baseline", peak.get("peak_allocated_above_baseline"))
    method = r["method"] if r["rank"] is None else f"{r['method']} r={r['rank']}"
    shape = f"{r['batch']} x {r['seq_len']}" + (" (padded)" if r["padded"] else "")
    peak_text = "n/a" if peak_value is None else f"{peak_value:,}"
    return (f"| {r['model']} | {method} | {'on' if r['checkpointing'] else 'off'} | {r['precision']} | {shape} "
            f"| {wm:,} / {we:,} ({_error(r['weights+gradients+optimizer error'])}) "
            f"| {am:,} / {ae:,} ({_error(r['activations error'])}) "
            f"| {peak_text} ({peak.get('device', '?')}) |")


def render(rows: list[dict]) -> str:
    lines = ["| model | method | GC | precision | batch x seq | weights + grads + optimizer: measured / estimated "
             "(error) | saved activations: measured / estimated (error) | peak above baseline (device, measured) |",
             "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [render_row(r) for r in rows])


def read_records(folder: str) -> list[dict]:
    """The finished records under `folder` that measured a training step."""
    records = []
    for path in sorted(glob.glob(os.path.join(folder, "**", RECORD_FILE), recursive=True)):
        record = read_record(path) or {}
        if record.get("status") == "ok" and record.get("memory", {}).get("measured_steps"):
            records.append(record)
    return records


def short_runs(models: list[str], methods: list[str], checkpointing: list[str], precisions: list[str]) -> list[dict]:
    """One short run per model x method x checkpointing setting x precision, in a temporary results folder."""
    records = []
    with tempfile.TemporaryDirectory(prefix="ledger-") as results:
        for model in models:
            for method in methods:
                for setting in checkpointing:
                    gc = "true" if setting == "on" else "false"
                    for precision in precisions:
                        records.append(short_run(model, method, results, [f"trainer.gradient_checkpointing={gc}",
                                                                          f"trainer.precision={precision}"]))
    return records


def default_precisions() -> list[str]:
    """fp32, and bf16 autocast where this machine has it (a CPU with bf16 instructions, or CUDA)."""
    import torch

    from lab.decisions import cpu_bf16_supported

    return ["fp32", "bf16"] if cpu_bf16_supported() or torch.cuda.is_available() else ["fp32"]


def report(rows: list[dict]) -> str:
    text = ("Bytes. Measured: lab.memory.ledger on the run's first training step (activations) and its real "
            "optimizer (state); estimated: lab.memory.estimate from the architecture, at the measured step's shape. "
            "Error = estimated / measured - 1. GC = gradient checkpointing. Precision: what the run computed in "
            "(bf16: autocast).\n\n" + render(rows) + "\n")
    failing = [r["run"] for r in rows if not within_tolerance(r)]
    return text + (f"\n{len(rows) - len(failing)} of {len(rows)} runs within tolerance (weights + gradients + "
                   f"optimizer {WGO_TOLERANCE:.0%}, activations {ACTIVATION_TOLERANCE:.0%})"
                   + (f"; outside: {', '.join(failing)}" if failing else "") + ".\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_vs_estimate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-bert", "tiny-llama"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="gradient checkpointing settings to run (default: off on)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        help="trainer.precision of the runs (default: fp32, and bf16 where this machine has it)")
    parser.add_argument("--records", help="compare the records under this results folder instead of running")
    parser.add_argument("--out", default="reports", help="output folder for ledger_vs_estimate.md (default: reports)")
    args = parser.parse_args(argv)
    records = read_records(args.records) if args.records else \
        short_runs(args.models, args.methods, args.checkpointing, args.precisions or default_precisions())
    text = report([compare(r) for r in records])
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ledger_vs_estimate.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
