"""Benchmark the suite's training step: overhead, hardware limit, method costs, scaling, start-up.

    python -m bench.benchmark            # full: about 10 min on 2 CPU cores -> docs/benchmarks.{md,json,png}
    python -m bench.benchmark --quick    # about 2 min, smaller shapes, fewer repeats -> docs/benchmarks-quick.*
    python -m bench.benchmark --sections peak,methods --repeats 5 --threads 2 --out docs
    python -m bench.benchmark --smoke    # tiny models, a few minutes: checks the code (numbers meaningless)
    python -m bench.benchmark --render docs/benchmarks.json   # measure nothing: re-write the .md and .png

Sections (`--sections`, comma-separated; default all): `peak`, `methods`, `adapters`, `breakdown`,
`scaling`, `startup`. Everything is measured in this one process (start-up in child processes it times), so
every ratio compares numbers taken side by side under the same load; the report states the load
average at start and at end. Run it on an otherwise idle machine. The code: bench.cases (what is
measured), bench.loops (the timing loops), bench.flops, bench.startup, bench.render (the report).

How each number is taken
  * Step time: the steady-state period between the ends of consecutive optimizer steps, after
    `--warmup` steps. The timed steps are cut into `--repeats` windows of `--steps` steps; each window's
    mean is one repeat, reported as median [min-max]. The period includes data loading, collation,
    logging and every callback, i.e. everything a step costs, but not Trainer construction or the
    first (warm-up) steps.
  * The suite's step: the run's own job, `lab.recipe.FineTune`: `setup_data()` (data, tokenizer,
    collator), `setup_model()` (the base loaded by `lab.models.load_model`, 4-bit for QLoRA, prepared
    by `lab.methods.apply_method`) and the Trainer of `setup_trainer()` (`transformers.Trainer` with
    exactly the `TrainingArguments` of `lab.recipe.training_arguments` and the run's callbacks), to
    which the benchmark only adds callbacks that read clocks -- the same calls, in the same order, as
    `lab-train` up to `trainer.train()`.
  * The plain loop: the same model object, batch, sequence length, thread count and optimizer class
    (torch AdamW, or bitsandbytes paged AdamW where the suite picks it on CUDA; same lr, betas, eps and
    weight decay), its own optimizer instance; batches are built with `torch.tensor` from the same
    tokenized rows; forward, backward, `optimizer.step()`, `zero_grad()`. No scheduler, no logging.
    A second twin, "plain + clip", adds `clip_grad_norm_` at the suite's `trainer.max_grad_norm`: the
    same work as the suite's step, so suite / (plain + clip) is the suite's own overhead and plain +
    clip - plain the cost of the recipe's clipping.
  * Interleaving: the suite and its twins take turns step by step in one Trainer run (a callback runs
    one step of each twin after each suite step, and the suite's period excludes that time), so a
    change in the machine's speed during the run hits all three alike. Peak memory is taken before,
    from a short suite-only run, so the twins' optimizer state never counts.
  * Tokens: non-padding input tokens per step (every row is exactly `seq` tokens long, so no padding).
  * FLOPs per step (matmuls only; elementwise ops, softmax, norms and the optimizer are not counted):
      each linear layer (in x out) applied to t rows costs 2*in*out*t forward; its input gradient
      costs the same again and its weight gradient the same again. A trainable layer (full training,
      the LoRA A/B adapters, new classification heads) therefore costs 6*in*out*t per step, a frozen
      one on the gradient path (the LoRA/QLoRA base) 4*in*out*t. t = batch*seq tokens, or batch for
      the per-sequence heads (BERT pooler and classifier). Attention adds 4*seq*d_attn FLOPs per token
      and layer forward (scores QK^T and the weighted sum AV, full square, as in the PaLM/Chinchilla
      accounting), times 3 for training in every method. For a dense model with N matmul parameters
      (lm_head included) this is 6*N*T (full) and about 4*N*T (LoRA) plus the attention term: LoRA
      skips the weight gradients, one third of the work. The frozen layer-0 projections whose input
      needs no gradient are counted at 4 too (an over-count below 1/layers of the base).
      QLoRA is credited the LoRA FLOPs: its 4-bit dequantization is extra work, not useful FLOPs.
  * Hardware limit: the best rate of `torch.matmul` on large square matrices (2*n^3 FLOPs) at the same
    thread count, in fp32, and in bf16 on CUDA and on a CPU with bf16 instructions (AVX512-BF16, AMX),
    where the methods section adds bf16-autocast rows on the BERT shape. MFU = achieved
    FLOP/s of the step / that peak.
  * Peak memory: `lab.memory.measure.PeakMemory`, as the suite records it (the job's `.peak`, taken by
    `FineTune.setup_model()`): peak resident set above a baseline taken before the model is loaded
    (CPU), or torch.cuda allocated peak (CUDA); read once after loading (and quantizing) the model,
    and again after `--warmup` + 1 suite-only steps (weights, gradients, optimizer state, activations).
  * LoRA and QLoRA run with the suite's defaults: rank 8, alpha 16, dropout 0.05, targets `qv`
    (q_proj/v_proj, query/value); QLoRA: NF4 with double quantization. The models are random-init
    from the `architecture` dicts of bench.cases, built once into `<cache>/models/bench-*` by `lab.models`.
  * CPU/wall: this process's CPU seconds per wall second over a case's timed windows; with T threads
    and no other load it approaches T during compute, and falls when other processes take the cores.
  * Start-up: `lab-train` run as a child process on tiny-llama (through `python -c`, see
    `bench.startup.STARTUP_HOOK`: it prints wall-clock stamps at interpreter start, after imports, on
    entering and leaving `lab.train.run`, at the Trainer's train begin/end and the first step's start
    and end, and at exit; nothing else changes); `-m` with K jobs (Hydra's basic launcher, one
    process) against K separate processes.

On CUDA the suite's own rules (lab.decisions) pick bf16, the paged optimizer and CUDA memory
statistics; steps are timed after `torch.cuda.synchronize()`. Device and library versions come from
`lab.provenance.provenance`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

# The benchmark never reaches the hub: set before huggingface_hub, transformers and datasets, imported
# below, read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.cases import FAMILY, METHODS, Budget, Case, adapter_cases, make_budget  # noqa: E402
from bench.flops import matmul_peak  # noqa: E402
from bench.loops import breakdown_case, measure_case  # noqa: E402
from bench.render import plot, render  # noqa: E402
from bench.startup import measure_startup  # noqa: E402
from lab.decisions import cpu_bf16_supported  # noqa: E402
from lab.provenance import provenance  # noqa: E402
from lab.recipe import resolve_device  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("peak", "methods", "adapters", "breakdown", "scaling", "startup")


# ---- the machine --------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def scheduling() -> str | None:
    """This process's nice value and, on Linux, its session's autogroup weight: on a shared machine
    the autogroup, not the nice value, decides the benchmark's share of the cores."""
    try:
        with open("/proc/self/autogroup") as f:
            return f"nice {os.nice(0)}, {f.read().strip()}"
    except OSError:
        return f"nice {os.nice(0)}"


def environment(device: str, loadavg_start: tuple) -> dict:
    return {"provenance": provenance(device), "threads": torch.get_num_threads(), "loadavg_start": loadavg_start,
            "cpu_model": cpu_model(), "scheduling": scheduling()}


# ---- command line -------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (about 2 min)")
    p.add_argument("--smoke", action="store_true", help="tiny models only: checks the code, numbers mean nothing")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=None, help="timed windows per case")
    p.add_argument("--steps", type=int, default=None, help="timed steps per window")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each window")
    p.add_argument("--out", default=os.path.join(ROOT, "docs"), help="folder for the .md, .json and .png")
    p.add_argument("--render", metavar="JSON", help="measure nothing: rewrite the .md (and .png) beside an "
                   "earlier run's JSON, after a change to the report's layout")
    return p


def render_only(path: str) -> dict:
    """Re-write the .md (and the .png) beside an earlier run's JSON."""
    with open(path) as f:
        report = json.load(f)
    folder = os.path.dirname(os.path.abspath(path))
    if "scaling" in report:
        plot(report, os.path.join(folder, report["files"]["png"]))
    with open(os.path.join(folder, report["files"]["md"]), "w") as f:
        f.write(render(report))
    return report


def choose_sections(args, p: argparse.ArgumentParser) -> list[str]:
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return sections


def choose_budget(args, p: argparse.ArgumentParser, mode: str, device: str) -> Budget:
    """The mode's budget, with the command line's repeats, steps and warm-up."""
    budget = make_budget(mode)
    if device == "cuda" and mode != "smoke":
        budget.peak_sizes = [4096, 8192]
    for key in ("repeats", "steps", "warmup"):
        if getattr(args, key) is not None:
            setattr(budget, key, getattr(args, key))
    if budget.warmup < 1:
        p.error("--warmup must be at least 1: the first step allocates optimizer state")
    return budget


# ---- the sections -------------------------------------------------------------------------------

@dataclass
class Session:
    """What every section measures with: the budget, the device, a results folder and the log."""
    budget: Budget
    device: str
    results: str
    log: Callable[[str], None]

    def measure(self, case: Case, plain: bool, repeats: int, steps: int, log=None) -> dict:
        return measure_case(case, self.budget, self.device, self.results, plain, repeats, steps, log or self.log)


def warm_up(session: Session) -> None:
    """One untimed step per method on a tiny model (lazy imports, allocator, thread pool)."""
    for method in METHODS:
        session.measure(Case("warm-up", FAMILY["llama-1m"], method, 2, 16), True, 1, 1, lambda message: None)


def bert_shape(budget: Budget) -> tuple[str, tuple]:
    """(name, (architecture, batch, seq)) of the budget's BERT shape: minilm-l6's, or its tiny stand-in."""
    return next((n, shape) for n, shape in budget.shapes.items() if shape[0]["model_type"] == "bert")


def methods_section(session: Session) -> list[dict]:
    """Every method on the budget's shapes, suite against plain, interleaved; then a small model."""
    b = session.budget
    cases = [Case(name, arch, method, batch, seq) for name, (arch, batch, seq) in b.shapes.items() for method in METHODS]
    if session.device == "cpu" and cpu_bf16_supported():
        # bf16 autocast beside fp32 where the CPU has bf16 instructions (`trainer.precision=bf16`), on the
        # BERT shape, the model the CPU sweeps train.
        name, (arch, batch, seq) = bert_shape(b)
        cases += [Case(f"{name} bf16", arch, method, batch, seq, extra=("trainer.precision=bf16",)) for method in METHODS]
    rows = [session.measure(c, True, b.repeats, b.steps) for c in cases]
    # Small steps expose per-step fixed costs; enough steps that the logging cadence falls inside.
    small_cases = [Case("llama-1m", FAMILY["llama-1m"], m, 8, 64) for m in METHODS]
    return rows + [session.measure(c, True, b.repeats, b.small_steps) for c in small_cases]


def adapters_section(session: Session) -> list[dict]:
    """Every method of the method comparison (sweeps/peft_methods.yaml), at its budget there, on the
    BERT shape (minilm-l6's, the model that sweep trains): the suite's step only, no twins."""
    b = session.budget
    name, (arch, batch, seq) = bert_shape(b)
    return [session.measure(c, False, b.repeats, b.steps) for c in adapter_cases(name, arch, batch, seq)]


def breakdown_section(session: Session) -> list[dict]:
    """A small LoRA step, the BERT shape's LoRA step and the first shape's full step, instrumented."""
    b = session.budget
    (name, (arch, batch, seq)), (bert_name, (bert, bert_batch, bert_seq)) = list(b.shapes.items())[:2]
    return [
        breakdown_case(Case("llama-1m", FAMILY["llama-1m"], "lora", 8, 64), b, session.device, session.results,
                       b.small_steps),
        breakdown_case(Case(bert_name, bert, "lora", bert_batch, bert_seq), b, session.device, session.results,
                       b.small_steps),
        breakdown_case(Case(name, arch, "full", batch, seq), b, session.device, session.results, b.steps),
    ]


def scaling_section(session: Session, methods: list[dict]) -> dict:
    """The Llama family at the first shape's batch x seq (reusing `methods` rows of that shape), and
    the budget's sequence lengths on one model."""
    b = session.budget
    _, (_, batch, seq) = next(iter(b.shapes.items()))
    reuse = {(m["case"]["name"], m["case"]["method"]): m for m in methods
             if m["case"]["batch"] == batch and m["case"]["seq"] == seq}
    size_rows = [reuse.get((model, method)) or
                 session.measure(Case(model, FAMILY[model], method, batch, seq), False, b.family_repeats, b.steps)
                 for model in b.family for method in METHODS]
    seq_rows = [session.measure(Case(b.seq_model, FAMILY[b.seq_model], method, batch, s), False, b.family_repeats,
                              b.steps)
                for s in b.seq_lengths for method in METHODS]
    return {"batch": batch, "seq": seq, "seq_model": b.seq_model, "by_size": size_rows, "by_seq": seq_rows}


def run_sections(report: dict, sections: list[str], session: Session, workdir: str) -> None:
    """Measure the chosen sections into `report`, in the order of SECTIONS."""
    log, b = session.log, session.budget
    log("warm-up: one untimed step per method on a tiny model (lazy imports, allocator, thread pool)")
    warm_up(session)
    if "peak" in sections:
        log("matmul peak")
        report["peak"] = matmul_peak(session.device, b.peak_sizes)
    if "methods" in sections:
        log("methods: suite vs plain, interleaved")
        report["methods"] = methods_section(session)
    if "adapters" in sections:
        log("adapters: every method of the method comparison, the suite's step")
        report["adapters"] = adapters_section(session)
    if "breakdown" in sections:
        log("breakdown of a step")
        report["breakdown"] = breakdown_section(session)
    if "scaling" in sections:
        log("scaling")
        report["scaling"] = scaling_section(session, report.get("methods", []))
    if "startup" in sections:
        log("start-up")
        report["startup"] = measure_startup(b.startup_jobs, workdir, log)


# ---- main ---------------------------------------------------------------------------------------

def quiet_libraries() -> None:
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def new_report(argv: list[str] | None, mode: str, budget: Budget, files: dict) -> dict:
    command = "python -m bench.benchmark" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": mode,
        "plan": asdict(budget),
        # Names relative to the report's own folder, so its links work wherever it is read.
        "files": {k: os.path.basename(v) for k, v in files.items()},
        "notes": [],
    }


def write_report(report: dict, files: dict, started: float, log) -> None:
    report["environment"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = time.time() - started
    if "scaling" in report:
        plot(report, files["png"])
    with open(files["json"], "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(files["md"], "w") as f:
        f.write(render(report))
    log(f"wrote {files['md']}, {files['json']}" + (f", {files['png']}" if "scaling" in report else ""))


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    if args.render:
        return render_only(args.render)
    sections = choose_sections(args, p)
    started, loadavg_start = time.time(), os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    budget = choose_budget(args, p, mode, device)
    quiet_libraries()
    stem = "benchmarks" if mode == "full" else f"benchmarks-{mode}"
    os.makedirs(args.out, exist_ok=True)
    files = {k: os.path.join(args.out, f"{stem}.{k}") for k in ("md", "json", "png")}

    def log(message: str) -> None:
        print(f"[benchmark {time.time() - started:6.0f}s] {message}", flush=True)

    report = new_report(argv, mode, budget, files)
    report["environment"] = environment(device, loadavg_start)
    log(f"device {device}, {torch.get_num_threads()} threads, load average {loadavg_start}")
    if device == "cpu" and loadavg_start[0] > 0.5:
        report["notes"].append(f"1-minute load average {loadavg_start[0]:.2f} at start: other processes shared "
                               "the CPUs, so absolute timings are pessimistic (ratios are taken side by side)")
    with tempfile.TemporaryDirectory(prefix="lab-benchmark-") as tmp:
        run_sections(report, sections, Session(budget, device, os.path.join(tmp, "results"), log), tmp)
    write_report(report, files, started, log)
    return report


if __name__ == "__main__":
    main()
