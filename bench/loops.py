"""Timing loops: the suite's step (its own Trainer, from `FineTune.setup_trainer`) and its plain
torch twins, interleaved step by step; one measured case; the instrumented breakdown of a step.

Every Trainer here is the job's (`job.setup_trainer(extra_callbacks=[...])`): the benchmark adds
callbacks that read clocks, never a Trainer of its own.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict

import bitsandbytes as bnb
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from bench.cases import Budget, Case, prepare
from bench.clock import release_memory, summarize, sync
from bench.flops import step_flops
from lab.memory.measure import weight_bytes
from lab.methods import count_params
from lab.recipe import FineTune, training_arguments

# ---- the suite's step ---------------------------------------------------------------------------


def suite_arguments(job: FineTune) -> TrainingArguments:
    """The run's TrainingArguments, as `job.setup_trainer` builds them (without building a Trainer)."""
    return training_arguments(job.cfg, job.device, job.run_id, [], [])


class StepClock(TrainerCallback):
    """Wall-clock time at the start and the end of every optimizer step."""

    def __init__(self, device: str):
        self.device = device
        self.begin, self.end = [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.end.append(time.perf_counter())


def run_steps(job: FineTune, callbacks: list, steps: int) -> Trainer:
    """A fresh Trainer of the job (the run's arguments and callbacks, plus `callbacks`) trained `steps` steps."""
    trainer = job.setup_trainer(extra_callbacks=callbacks)
    trainer.args.max_steps = steps
    trainer.train()
    return trainer


def check_steps(ends: list, expected: int) -> None:
    if len(ends) != expected:
        raise RuntimeError(f"the Trainer ran {len(ends)} steps, expected {expected}")


def suite_window(job: FineTune, warmup: int, steps: int) -> list[float]:
    """Seconds per step of the suite's Trainer over `steps` steps after `warmup` steps."""
    clock = StepClock(job.device)
    run_steps(job, [clock], warmup + steps)
    check_steps(clock.end, warmup + steps)
    return [b - a for a, b in zip(clock.end[warmup - 1:], clock.end[warmup:])]


# ---- the plain loop -----------------------------------------------------------------------------


def plain_optimizer(args: TrainingArguments, params):
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                  weight_decay=args.weight_decay)
    if args.optim == "paged_adamw_32bit":
        return bnb.optim.PagedAdamW32bit(params, **kwargs)
    if args.optim != "adamw_torch":
        raise RuntimeError(f"no plain-loop twin for optimizer {args.optim}")
    return torch.optim.AdamW(params, **kwargs)


def add_parts(parts: dict | None, clip: float | None, t0: float, t1: float, t2: float, t3: float) -> None:
    """A plain step's parts (seconds), from its four stamps."""
    if parts is None:
        return
    for key, value in (("collate", t1 - t0), ("forward + backward" + (" + clip" if clip else ""), t2 - t1),
                       ("optimizer + zero_grad", t3 - t2)):
        parts.setdefault(key, []).append(value)


def plain_stepper(job: FineTune, clip: float | None = None, parts: dict | None = None):
    """One step of a hand-written loop on the job's model, rows and optimizer class; returns its seconds.

    `clip` adds `torch.nn.utils.clip_grad_norm_` between backward and the optimizer, the one piece of
    the suite's recipe (trainer.max_grad_norm) the bare loop leaves out."""
    model, device = job.model, job.device
    args = suite_arguments(job)
    batch = args.per_device_train_batch_size
    columns = job.tokenized["train"][:]
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask", "labels") if k in columns]
    n_rows = len(columns["input_ids"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = plain_optimizer(args, trainable)
    autocast = (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    counter = iter(range(10 ** 9))

    def step() -> float:
        model.train()
        t0 = time.perf_counter()
        start = (next(counter) * batch) % n_rows
        inputs = {k: torch.tensor(columns[k][start:start + batch], device=device) for k in keys}
        t1 = time.perf_counter()
        with autocast():
            loss = model(**inputs).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        sync(device)
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        t3 = time.perf_counter()
        add_parts(parts, clip, t0, t1, t2, t3)
        return t3 - t0

    return step


def plain_window(job: FineTune, warmup: int, steps: int, parts: dict | None = None) -> list[float]:
    """Seconds per step of the plain loop over `steps` steps after `warmup` steps."""
    timed: dict = {}
    step = plain_stepper(job, parts=timed)
    times = [step() for _ in range(warmup + steps)]
    if parts is not None:
        for key, values in timed.items():
            parts.setdefault(key, []).extend(values[warmup:])
    return times[warmup:]


# ---- the suite and its twins, in turn -----------------------------------------------------------


class TakeTurns(TrainerCallback):
    """After each suite step, one step of each plain twin (the twins take turns going first); keeps the
    suite's step ends and the time the twins took after each."""

    def __init__(self, device: str, twins: dict):
        self.device, self.twins = device, twins
        self.times: dict = {name: [] for name in twins}
        self.ends: list[float] = []
        self.inserted: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.ends.append(time.perf_counter())
        names = list(self.twins) if len(self.ends) % 2 else list(self.twins)[::-1]
        for name in names:
            self.times[name].append(self.twins[name]())
        self.inserted.append(time.perf_counter() - self.ends[-1])

    def suite_periods(self) -> list[float]:
        """The periods between the suite's step ends, less the twins' time inside each."""
        return [self.ends[i] - self.ends[i - 1] - self.inserted[i - 1] for i in range(1, len(self.ends))]


def interleaved(job: FineTune, warmup: int, steps: int, clip: float | None) -> dict:
    """Suite, plain and plain + clip steps taken in turn, step by step, in one Trainer run.

    After each of the suite's optimizer steps a callback runs one step of each plain twin (the twins
    take turns going first). The suite's step time is the period between its step ends less the time
    the twins took inside it, so drift in the machine's speed hits all three alike."""
    twins = {"plain": plain_stepper(job)}
    if clip:
        twins["plain + clip"] = plain_stepper(job, clip=clip)
    turns = TakeTurns(job.device, twins)
    run_steps(job, [turns], warmup + steps)
    check_steps(turns.ends, warmup + steps)
    # The suite's first period follows its first step; drop as many twin steps as suite steps are dropped.
    return {"suite": turns.suite_periods()[warmup - 1:], **{k: v[warmup:] for k, v in turns.times.items()}}


# ---- one measured case --------------------------------------------------------------------------


def memory_probe(job: FineTune, warmup: int) -> dict:
    """Peak memory after `warmup` + 1 suite-only steps, before any twin's optimizer state exists."""
    run_steps(job, [], warmup + 1)
    peak = job.peak.read()
    job.trainer = None  # the probe's optimizer state is not held during the timed runs
    return peak


def timed_steps(job: FineTune, budget: Budget, plain: bool, repeats: int, steps: int) -> tuple[dict, float]:
    """Per-step seconds by loop ("suite", and with `plain` its twins), and CPU seconds per wall second."""
    clip = suite_arguments(job).max_grad_norm or None
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    if plain:
        per_step = interleaved(job, budget.warmup, repeats * steps, clip)
    else:
        per_step = {"suite": [t for _ in range(repeats) for t in suite_window(job, budget.warmup, steps)]}
    return per_step, (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)


def case_result(case: Case, job: FineTune, per_step: dict, steps: int, repeats: int, measured: dict) -> dict:
    """The report's entry of one case; `measured` holds its memory and CPU/wall."""
    # Windows of `steps` consecutive steps: their means are the repeats that median [min-max] summarise.
    windows = {k: [statistics.fmean(v[i * steps:(i + 1) * steps]) for i in range(repeats)] for k, v in per_step.items()}
    args = job.args
    out = {
        "case": asdict(case),
        "params": count_params(job.model),
        "tokens_per_step": case.batch * case.seq,
        "flops_per_step": step_flops(job.model, job.cfg, case.batch, case.seq),
        "suite_step_s": summarize(windows["suite"]),
        "suite_step_s_raw": per_step["suite"],
        "memory": measured["memory"],
        "memory_after_load": measured["memory_after_load"],
        "cpu_per_wall": measured["cpu_per_wall"],
        "weights": weight_bytes(job.model),
        "precision": "bf16" if args.bf16 else "fp32",
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "max_grad_norm": args.max_grad_norm,
    }
    for twin in ("plain", "plain + clip"):
        if twin in windows:
            key = twin.replace(" + ", "_")
            out[f"{key}_step_s"] = summarize(windows[twin])
            out[f"{key}_step_s_raw"] = per_step[twin]
            out[f"suite_over_{key}_throughput"] = summarize([p / s for s, p in zip(windows["suite"], windows[twin])])
    return out


def case_line(case: Case, out: dict) -> str:
    twins = "".join(f", {t} {out[t.replace(' + ', '_') + '_step_s']['median']:.4f}" for t in ("plain", "plain + clip")
                    if t.replace(" + ", "_") + "_step_s" in out)
    return f"  {case.name} {case.method} b{case.batch}x{case.seq}: suite {out['suite_step_s']['median']:.4f} s/step{twins}"


def measure_case(case: Case, budget: Budget, device: str, results: str, plain: bool, repeats: int, steps: int,
                 log) -> dict:
    """Suite step times for one case (with `plain`: interleaved with its plain twins), memory and FLOPs."""
    job = prepare(case, budget.warmup + repeats * steps, results, device)
    release_memory()
    job.setup_model()  # takes the job's PeakMemory baseline, then loads (and quantizes) the model
    measured = {"memory_after_load": job.peak.read()}
    # Memory first, from a short suite-only run: the twins' own optimizer state must not count.
    measured["memory"] = memory_probe(job, budget.warmup)
    per_step, measured["cpu_per_wall"] = timed_steps(job, budget, plain, repeats, steps)
    out = case_result(case, job, per_step, steps, repeats, measured)
    log(case_line(case, out))
    del job
    release_memory()
    return out


# ---- where a step's time goes -------------------------------------------------------------------

# Span of each part of the suite's step, between two of the stamps `Marks` takes.
SUITE_SPANS = {
    "fetch + collate (get_batch_samples)": ("fetch_start", "fetch_end"),
    "step-begin callbacks": ("fetch_end", "fwd_start"),
    "forward + backward (training_step)": ("fwd_start", "fwd_end"),
    "token count + FLOP estimate": ("fwd_end", "clip_start"),
    "gradient clipping (max_grad_norm)": ("clip_start", "clip_end"),
    "grad-norm read + pre-optimizer callbacks": ("clip_end", "pre_optimizer"),
    "optimizer.step": ("pre_optimizer", "optimizer_done"),
    "lr scheduler + zero_grad + step-end callbacks": ("optimizer_done", "step_end"),
}
BETWEEN_STEPS = "logging / eval / save check"


class Marks(TrainerCallback):
    """Wall-clock stamps around the parts of each Trainer step, one dict per step: from the callback
    hooks here, and around the Trainer's own methods once `instrument` has wrapped them."""

    def __init__(self, device: str):
        self.device = device
        self.marks: list[dict] = []

    def stamp(self, name: str) -> None:
        sync(self.device)
        self.marks[-1][name] = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.stamp("pre_optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.stamp("optimizer_done")

    def on_step_end(self, args, state, control, **kwargs):
        self.stamp("step_end")

    def timed(self, method, before: str, after: str):
        def wrapper(*args, **kwargs):
            if before == "fetch_start":
                self.marks.append({})
            if not self.marks:  # the ledger's probe step at train begin, before the first fetch: not a step
                return method(*args, **kwargs)
            self.marks[-1][before] = time.perf_counter()
            result = method(*args, **kwargs)
            self.stamp(after)
            return result
        return wrapper

    def instrument(self, trainer: Trainer) -> None:
        # Instance attributes shadow the Trainer's methods for this one object only.
        trainer.get_batch_samples = self.timed(trainer.get_batch_samples, "fetch_start", "fetch_end")
        trainer.training_step = self.timed(trainer.training_step, "fwd_start", "fwd_end")
        trainer._clip_grad_norm = self.timed(trainer._clip_grad_norm, "clip_start", "clip_end")


def suite_parts(marks: list[dict], warmup: int) -> dict[str, list[float]]:
    """Seconds of each part of the steps after `warmup`, and the gap from a step's end to the next fetch."""
    parts: dict[str, list[float]] = {k: [] for k in [*SUITE_SPANS, BETWEEN_STEPS]}
    for i in range(warmup, len(marks)):
        for key, (a, b) in SUITE_SPANS.items():
            parts[key].append(marks[i][b] - marks[i][a])
        if i + 1 < len(marks):
            parts[BETWEEN_STEPS].append(marks[i + 1]["fetch_start"] - marks[i]["step_end"])
    return parts


def breakdown_case(case: Case, budget: Budget, device: str, results: str, steps: int) -> dict:
    """Where a suite step's time goes, against the plain loop's parts (instrumented run, not the timed one)."""
    job = prepare(case, budget.warmup + steps, results, device)
    job.setup_model()
    marks = Marks(device)
    trainer = job.setup_trainer(extra_callbacks=[marks])
    marks.instrument(trainer)
    trainer.train()
    suite = suite_parts(marks.marks, budget.warmup)
    plain: dict = {}
    plain_window(job, budget.warmup, steps, plain)
    logging_steps = job.cfg.trainer.logging_steps
    del job, trainer
    release_memory()
    return {
        "case": asdict(case),
        "steps": steps,
        "logging_steps": logging_steps,
        "suite_ms": {k: 1e3 * statistics.median(v) for k, v in suite.items() if v},
        "suite_ms_max": {k: 1e3 * max(v) for k, v in suite.items() if v},
        "plain_ms": {k: 1e3 * statistics.median(v) for k, v in plain.items()},
    }
