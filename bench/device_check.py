"""Device check: full fine-tuning, LoRA and QLoRA for a few steps each on random-init Llama models
of about 0.5B and 1.5B parameters, written as one JSON (scripts/gpu_check.sh).

    python -m bench.device_check --out reports/device_check.json     # one GPU: under 8 minutes on an H200
    python -m bench.device_check --cpu-smoke --out /tmp/smoke.json   # tiny sizes, every path but CUDA's

Each run is a real `lab.train.run` (the suite's job, `lab.recipe.FineTune`): the model is built from
a LlamaConfig, saved as safetensors into the cache and loaded back with `from_pretrained`, so QLoRA quantizes on
load. No hub is needed. Per run the JSON holds the step time (median of the steps after the first),
tokens/s, the measured CUDA peaks against the estimator's prediction per category, lab-plan's
prediction (bytes by category, the peak and the headroom rule's need) with the error of each
measured category and peak against it, the optimizer that ran and whether its state was really paged; once per check, the device and the bitsandbytes
build and kernels. On the CPU the CUDA-only parts are absent, with notes; nothing fails for lack of a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

# No hub: set before huggingface_hub (imported below, through transformers) reads it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bitsandbytes as bnb  # noqa: E402
import torch  # noqa: E402
from bitsandbytes import cextension  # noqa: E402
from bitsandbytes.cuda_specs import get_cuda_specs  # noqa: E402

from lab.memory import budget, gpus  # noqa: E402
from lab.memory import estimate as estimator  # noqa: E402
from lab.memory.estimate import config_for, count_params  # noqa: E402
from lab.record import write_json_atomic  # noqa: E402
from lab.train import run  # noqa: E402

# Llama-2-style blocks (multi-head attention, SwiGLU MLP, 32000-word vocabulary, untied lm_head).
GPU_MODELS = {
    "llama-0.5b": {"hidden_size": 1024, "num_hidden_layers": 26, "num_attention_heads": 16,
                   "num_key_value_heads": 16, "intermediate_size": 4096, "vocab_size": 32000},
    "llama-1.5b": {"hidden_size": 2048, "num_hidden_layers": 26, "num_attention_heads": 16,
                   "num_key_value_heads": 16, "intermediate_size": 5632, "vocab_size": 32000},
}
SMOKE_MODELS = {
    "llama-smoke-a": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 512},
    "llama-smoke-b": {"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "intermediate_size": 192, "vocab_size": 512},
}
GPU_SHAPE = {"batch": 4, "seq_len": 512, "steps": 8}
SMOKE_SHAPE = {"batch": 2, "seq_len": 32, "steps": 3}
# (method, rank, overrides): the QLoRA paper's adapters (r=64 on every linear layer), its paged
# 32-bit AdamW (auto), and on the first model paged 8-bit AdamW as well.
RUNS = [("full", None, []), ("lora", 64, []), ("qlora", 64, []), ("qlora", 64, ["method.optimizer=paged_adamw_8bit"])]
SMOKE_RANK = 8
CATEGORIES = ("weights_total", "buffers", "gradients", "optimizer_state", "activations")
BNB_OPS = ("quantize_4bit", "dequantize_4bit", "gemv_4bit", "optimizer_update_32bit",
           "optimizer_update_8bit_blockwise")


def run_overrides(name: str, arch: dict, method: str, rank: int | None, extra: list[str], shape: dict,
                  results: str) -> list[str]:
    """`lab-train` overrides of one run: tiny-llama's config with this architecture and shape."""
    out = [f"model.name={name}", "model.architecture.initializer_range=0.02",
           f"model.architecture.max_position_embeddings={shape['seq_len']}", f"model.max_length={shape['seq_len']}",
           # synthetic-lm rows are `length` words after a BOS token: exactly seq_len tokens
           f"dataset.length={shape['seq_len'] - 1}",
           f"dataset.sizes={{train: {shape['batch'] * shape['steps']}, validation: {shape['batch']}, "
           f"test: {shape['batch']}}}",
           f"trainer.max_steps={shape['steps']}", f"trainer.batch_size={shape['batch']}",
           f"trainer.eval_batch_size={shape['batch']}", "trainer.logging_steps=1", "logger=none",
           "skip_finished=false", f"paths.results={results}"]
    out += [f"model.architecture.{key}={value}" for key, value in arch.items()]
    if method != "full":
        out.append("method.targets=all-linear")
    return out + list(extra)


def device_info() -> dict:
    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", total_memory_bytes=props.total_memory,
                    device_count=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    else:
        info.update(name=None, note="no CUDA device: the CUDA-only parts of this check (CUDA peaks, paging, "
                                    "bf16 autocast, CUDA kernels) were not exercised")
    return info


def registered_kernels() -> dict:
    """For each bitsandbytes op of BNB_OPS: whether it has a CPU, a CUDA and a default kernel."""
    kernels = {}
    for op in BNB_OPS:
        name = f"bitsandbytes::{op}"
        try:
            # "default": the pure-torch implementation, used where a device has no kernel of its own.
            kernels[op] = {label: torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for label, key in
                           (("cpu", "CPU"), ("cuda", "CUDA"), ("default", "CompositeExplicitAutograd"))}
        except RuntimeError as err:  # an op this bitsandbytes version does not define
            kernels[op] = {"error": str(err).splitlines()[0]}
    return kernels


def cuda_specs() -> dict | str | None:
    """What bitsandbytes found of CUDA (None without it)."""
    try:
        specs = get_cuda_specs()
    except Exception as err:  # diagnostics only: never fail the check for them
        return f"{type(err).__name__}: {err}"
    return None if specs is None else {k: str(v) for k, v in dataclasses.asdict(specs).items()}


def bitsandbytes_info(device: str) -> dict:
    """Which bitsandbytes build is loaded and which device kernels its ops have."""
    library = getattr(getattr(cextension.lib, "_lib", None), "_name", None)
    kernels = registered_kernels()
    info = {"version": bnb.__version__, "backend": getattr(cextension, "BNB_BACKEND", None),
            "native_library": library, "compiled_with_cuda": getattr(cextension.lib, "compiled_with_cuda", None),
            "kernels_registered": kernels, "cuda_specs": cuda_specs()}
    key = "cuda" if device == "cuda" else "cpu"
    info[f"{key}_kernels_for"] = sorted(op for op, has in kernels.items() if has.get(key))
    return info


def memory_entry(memory: dict, estimate: dict) -> dict:
    """A run's ledger and CUDA peak against the estimator's prediction, per category (bytes)."""
    measured = {"weights_total": sum(memory["weights"].values()), "buffers": memory.get("buffers"),
                "gradients": memory.get("gradients"), "optimizer_state": sum(memory["optimizer_state"].values()),
                "activations": memory.get("activations")}
    peak = memory.get("peak", {})
    device_peak = peak.get("peak_allocated_above_baseline")
    return {
        "unit": "bytes",
        "device_peak": peak,
        "estimate": {k: estimate.get(k) for k in CATEGORIES + ("peak_estimate",)},
        "ledger": measured,
        "ledger_over_estimate": {k: (measured[k] / estimate[k]) if estimate.get(k) and measured[k] is not None
                                 else None for k in CATEGORIES},
        "cuda_peak_allocated_over_estimate": (device_peak / estimate["peak_estimate"])
        if device_peak is not None and estimate.get("peak_estimate") else None,
        "placement": memory.get("placement"),
    }


def plan_entry(cfg, shape: dict, memory: dict | None) -> dict:
    """lab-plan's prediction for the run's config on CUDA (lab.memory.budget, the numbers `lab-plan`
    prints), beside what the run measured: its ledger per category and its CUDA peaks. error =
    measured / predicted - 1. On the CPU the measured side is an fp32 CPU run and the peaks are
    RSS, so only the code path is exercised there (the entry says so)."""
    est = estimator.summarize(estimator.Plan(cfg, "cuda"), shape["batch"], shape["seq_len"])
    predicted = budget.budget(est)
    weights = sum(v for k, v in predicted.items() if k.startswith("weights:"))
    entry = {"unit": "bytes", "predicted": predicted, "headroom_rule": gpus.RULE,
             "comparable": torch.cuda.is_available()}
    if not memory:
        return entry
    pairs = {"weights": (sum(memory["weights"].values()), weights),
             "gradients": (memory.get("gradients"), predicted["gradients"]),
             "optimizer state": (sum(memory["optimizer_state"].values()), predicted["optimizer state"]),
             "saved activations + autocast weight copies": (
                 memory.get("activations"), predicted["saved activations"] + predicted["autocast weight copies (saved)"]),
             "buffers": (memory.get("buffers"), predicted["buffers"])}
    peak = memory.get("peak", {})
    pairs["peak: CUDA allocated vs peak estimate"] = (peak.get("peak_allocated_above_baseline"),
                                                      predicted["peak estimate (device)"])
    pairs["peak: CUDA reserved vs needed (headroom rule)"] = (peak.get("peak_reserved_above_baseline"),
                                                              predicted["needed on the GPU"])
    entry["measured"] = {k: m for k, (m, _) in pairs.items()}
    entry["error"] = {k: (m / p - 1) if m is not None and p else None for k, (m, p) in pairs.items()}
    reserved = peak.get("peak_reserved_above_baseline")
    entry["within_headroom"] = reserved <= predicted["needed on the GPU"] if reserved is not None else None
    if not entry["comparable"]:
        entry["note"] = "no CUDA device: the prediction is for CUDA (bf16), the measurement an fp32 CPU run"
    return entry


def summarize_run(record: dict, shape: dict, cfg=None) -> dict:
    """One run's entry of the JSON, from its result record."""
    out = {"run_id": record.get("run_id"), "status": record.get("status"), "method": record.get("method"),
           "rank": record.get("rank"), "error": record.get("error"), "notes": record.get("notes", [])}
    if record.get("status") != "ok":
        return out
    timing, memory = record["timing"], record["memory"]
    steps = timing.get("step_seconds") or []
    steady = steps[1:] or steps
    step_seconds = statistics.median(steady) if steady else None
    tokens_per_step = timing["train_tokens"] / timing["train_steps"] if timing.get("train_steps") else None
    estimate = (memory.get("measured_steps") or [{}])[0].get("estimate") or {}
    out.update({
        "params": record["params"],
        "batch": shape["batch"], "seq_len": shape["seq_len"], "steps": timing.get("train_steps"),
        "precision": record.get("precision"), "compute_dtype": record.get("compute_dtype"),
        "first_step_seconds": steps[0] if steps else None,
        "step_seconds_median": step_seconds,
        "tokens_per_step": tokens_per_step,
        "tokens_per_second": tokens_per_step / step_seconds if tokens_per_step and step_seconds else None,
        "optimizer": record.get("optimizer"),
        "memory": memory_entry(memory, estimate),
    })
    if cfg is not None:
        out["plan"] = plan_entry(cfg, shape, memory)
    return out


def run_one(name: str, arch: dict, method: str, rank: int | None, extra: list[str], shape: dict,
            results: str) -> dict:
    """One `lab.train.run` of the check; a failure is reported in the entry, never raised."""
    overrides = run_overrides(name, arch, method, rank, extra, shape, results)
    began = time.time()
    cfg = None
    try:
        cfg = config_for("tiny-llama", method, rank, None, overrides)
        record = run(cfg)
    except Exception as err:  # report it and go on: one broken path must not hide the others
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}", "method": method, "rank": rank}
    return {"model": name, **summarize_run(record, shape, cfg), "wall_seconds": round(time.time() - began, 2)}


def sizes(device: str, smoke: bool) -> tuple[dict, dict]:
    """The models and the shape: the GPU sizes on CUDA, else (or with `smoke`) the smoke sizes."""
    return (SMOKE_MODELS, SMOKE_SHAPE) if smoke or device == "cpu" else (GPU_MODELS, GPU_SHAPE)


def new_report(device: str, smoke: bool) -> dict:
    models, shape = sizes(device, smoke)
    report = {"schema": 1, "mode": "cpu-smoke" if models is SMOKE_MODELS else "gpu", "device": device_info(),
              "bitsandbytes": bitsandbytes_info(device), "shape": shape, "models": {}, "runs": [], "notes": []}
    if device == "cpu" and not smoke:
        report["notes"].append("no CUDA device: ran the CPU smoke sizes instead of the 0.5B / 1.5B models")
    return report


def check(smoke: bool, out_path: str, results: str | None = None, budget_seconds: float = 450) -> dict:
    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = results or os.path.join(os.path.dirname(os.path.abspath(out_path)), "device_check_records")
    report = new_report(device, smoke)
    models, shape = sizes(device, smoke)
    for index, (name, arch) in enumerate(models.items()):
        base = config_for("tiny-llama", "full", None, None, run_overrides(name, arch, "full", None, [], shape, results))
        report["models"][name] = {"architecture": arch, "params": count_params(base)["total"]}
        for method, rank, extra in RUNS:
            if extra and index > 0:
                continue  # paged 8-bit AdamW on the first model only
            if time.time() - started > budget_seconds:
                report["notes"].append(f"time budget of {budget_seconds:.0f} s spent: skipped {name} {method} {extra}")
                continue
            rank = SMOKE_RANK if smoke and rank else rank
            report["runs"].append(run_one(name, arch, method, rank, extra, shape, results))
            _write(out_path, report, started)
    report["ok"] = bool(report["runs"]) and all(r["status"] == "ok" for r in report["runs"])
    _write(out_path, report, started)
    return report


def _write(path: str, report: dict, started: float) -> None:
    report["wall_seconds"] = round(time.time() - started, 2)
    write_json_atomic(os.path.abspath(path), report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny models: every code path but CUDA's")
    parser.add_argument("--out", default="reports/device_check.json")
    parser.add_argument("--results", default=None, help="where the runs' records go (default: beside --out)")
    parser.add_argument("--budget-seconds", type=float, default=450,
                        help="start no run after this many seconds (the check must end within 8 minutes)")
    args = parser.parse_args(argv)
    report = check(args.cpu_smoke, args.out, args.results, args.budget_seconds)
    for entry in report["runs"]:
        tps = entry.get("tokens_per_second")
        print(f"{entry['model']:>14} {entry['method']:>5} {entry['status']:>8}  "
              f"step {entry.get('step_seconds_median') or float('nan'):.4f} s  "
              f"{tps or float('nan'):,.0f} tokens/s  optimizer {(entry.get('optimizer') or {}).get('ran')}")
        errors = (entry.get("plan") or {}).get("error") or {}
        if errors:
            print(" " * 16 + "lab-plan error (measured / predicted - 1): " + ", ".join(
                f"{k} {v:+.1%}" for k, v in errors.items() if v is not None))
    print(f"device check {'ok' if report['ok'] else 'NOT ok'} in {report['wall_seconds']:.0f} s: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
