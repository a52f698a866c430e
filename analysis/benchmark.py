"""Benchmark the suite's training step: overhead, hardware limit, method costs, scaling, start-up.

    python -m analysis.benchmark            # full: about 10 min on 2 CPU cores -> docs/benchmarks.{md,json,png}
    python -m analysis.benchmark --quick    # about 2 min, smaller shapes, fewer repeats -> docs/benchmarks-quick.*
    python -m analysis.benchmark --sections peak,methods --repeats 5 --threads 2 --out docs
    python -m analysis.benchmark --smoke    # tiny models, a minute or two: checks the code (numbers meaningless)

Sections (`--sections`, comma-separated; default all): `peak`, `methods`, `breakdown`, `scaling`,
`startup`. Everything is measured in this one process (start-up in child processes it times), so
every ratio compares numbers taken side by side under the same load; the report states the load
average at start and at end. Run it on an otherwise idle machine.

How each number is taken
  * Step time: the steady-state period between the ends of consecutive optimizer steps, after
    `--warmup` steps. The timed steps are cut into `--repeats` windows of `--steps` steps; each window's
    mean is one repeat, reported as median [min-max]. The period includes data loading, collation,
    logging and every callback, i.e. everything a step costs, but not Trainer construction or the
    first (warm-up) steps.
  * The suite's step: `transformers.Trainer` with exactly the `TrainingArguments` of
    `lab.train.training_arguments`, the collator of `lab.data.collator`, the suite's callbacks, and the
    model loaded by `lab.models.load_model` and prepared by `lab.methods.apply_method` -- the same calls,
    in the same order, as `lab.train.train_and_evaluate` up to `trainer.train()`.
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
    thread count, in fp32 (and bf16 on CUDA, the precision the suite trains in there). MFU = achieved
    FLOP/s of the step / that peak.
  * Peak memory: `lab.memory.PeakMemory`, as the suite records it: peak resident set above a baseline
    taken before the model is loaded (CPU), or torch.cuda allocated peak (CUDA); read once after
    loading (and quantizing) the model, and again after `--warmup` + 1 suite-only steps (weights,
    gradients, optimizer state, activations).
  * LoRA and QLoRA run with the suite's defaults: rank 8, alpha 16, dropout 0.05, targets `qv`
    (q_proj/v_proj, query/value); QLoRA: NF4 with double quantization. The models are random-init
    from the `architecture` dicts below, built once into `<cache>/models/bench-*` by `lab.models`.
  * CPU/wall: this process's CPU seconds per wall second over a case's timed windows; with T threads
    and no other load it approaches T during compute, and falls when other processes take the cores.
  * Start-up: `lab-train` run as a child process on tiny-llama (through `python -c`, see
    `STARTUP_HOOK`: it prints wall-clock stamps at interpreter start, after imports, on entering and
    leaving `lab.train.run`, at the Trainer's train begin/end and the first step's start and end, and
    at exit; nothing else changes); `-m` with K jobs (Hydra's basic launcher, one process) against K
    separate processes.

On CUDA the suite's own functions pick bf16, the paged optimizer and CUDA memory statistics; steps
are timed after `torch.cuda.synchronize()`. Device and library versions come from
`lab.record.provenance`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("full", "lora", "qlora")
SECTIONS = ("peak", "methods", "breakdown", "scaling", "startup")

SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                    max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.02,
                    rms_norm_eps=1e-5)
MINILM_L6 = dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                 num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)


def llama(hidden, layers, heads, kv_heads, intermediate, vocab):
    return dict(model_type="llama", vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.02)


# About 1M, 4M, 15M, 46M parameters; the SmolLM2-135M shape closes the family.
FAMILY = {
    "llama-1m": llama(128, 4, 4, 2, 384, 2048),
    "llama-4m": llama(256, 4, 4, 2, 768, 4096),
    "llama-15m": llama(384, 8, 6, 2, 1024, 8192),
    "llama-46m": llama(512, 12, 8, 4, 1536, 16384),
    "smollm2-135m-shape": SMOLLM2_135M,
}


@dataclass
class Case:
    name: str
    architecture: dict
    method: str
    batch: int
    seq: int
    rank: int = 8

    @property
    def task(self) -> str:
        return "cls" if self.architecture["model_type"] == "bert" else "lm"


@dataclass
class Plan:
    """How much to measure; `--quick` shrinks every part of it."""
    warmup: int = 1
    steps: int = 3
    repeats: int = 3
    shapes: dict = field(default_factory=dict)
    small_steps: int = 20
    family: list = field(default_factory=list)
    family_repeats: int = 2
    seq_model: str = "llama-15m"
    seq_lengths: list = field(default_factory=list)
    peak_sizes: list = field(default_factory=list)
    startup_jobs: int = 3


def make_plan(mode: str) -> Plan:
    if mode == "smoke":
        # Exercises every code path in a minute or two; the numbers mean nothing.
        tiny_llama, tiny_bert = FAMILY["llama-1m"], dict(MINILM_L6, hidden_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=128, vocab_size=1024)
        return Plan(warmup=1, steps=2, repeats=1, small_steps=3, family_repeats=1,
                    shapes={"llama-1m-as-smollm": (tiny_llama, 2, 16), "tiny-bert-as-minilm": (tiny_bert, 2, 16)},
                    family=["llama-1m", "llama-4m"], seq_model="llama-1m", seq_lengths=[16, 32], peak_sizes=[256],
                    startup_jobs=2)
    if mode == "quick":
        return Plan(warmup=1, steps=2, repeats=2, small_steps=10, family_repeats=1,
                    shapes={"smollm2-135m-shape": (SMOLLM2_135M, 2, 64), "minilm-l6-shape": (MINILM_L6, 4, 64)},
                    family=["llama-1m", "llama-4m", "llama-15m", "smollm2-135m-shape"],
                    seq_model="llama-4m", seq_lengths=[32, 64, 128], peak_sizes=[1024, 2048], startup_jobs=2)
    return Plan(shapes={"smollm2-135m-shape": (SMOLLM2_135M, 4, 128), "minilm-l6-shape": (MINILM_L6, 8, 128)},
                family=list(FAMILY), seq_lengths=[64, 128, 256, 512], peak_sizes=[1024, 2048, 4096])


# ---- environment --------------------------------------------------------------------------------

def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def release_memory() -> None:
    """Return freed heap pages to the OS so the next peak-RSS baseline starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def matmul_peak(device: str, sizes: list[int], repeats: int = 5) -> dict:
    """Best FLOP/s of a square matmul at each size; fp32, plus bf16 on CUDA."""
    import torch

    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
    out = {}
    for dtype in dtypes:
        rows = []
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            torch.matmul(a, b)
            sync(device)
            rates = []
            for _ in range(repeats):
                start = time.perf_counter()
                torch.matmul(a, b)
                sync(device)
                rates.append(2 * n ** 3 / (time.perf_counter() - start))
            rows.append({"n": n, **{f"flops_per_s_{k}": v for k, v in summarize(rates).items() if k != "n"}})
            del a, b
        name = str(dtype).removeprefix("torch.")
        out[name] = {"sizes": rows, "peak_flops_per_s": max(r["flops_per_s_max"] for r in rows)}
    return out


# ---- the suite's objects ------------------------------------------------------------------------

def compose_case(case: Case, steps: int, results: str):
    """The validated config `lab-train` would run for this case."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from lab.config import validate
    from lab.train import CONF_DIR

    base = "tiny-bert" if case.task == "cls" else "tiny-llama"
    rows = case.batch * steps
    overrides = [
        f"method={case.method}", f"model={base}", f"dataset=synthetic-{case.task}", "logger=none",
        f"trainer.batch_size={case.batch}", f"trainer.max_steps={steps}", f"model.max_length={case.seq}",
        # Both word-level tokenizers add two tokens (<s> ... </s>, [CLS] ... [SEP]): rows are exactly `seq` long.
        f"dataset.length={case.seq - 2}",
        f"dataset.sizes={{train:{rows},validation:{case.batch},test:{case.batch}}}",
        f"paths.results={results}",
    ]
    if case.method != "full":
        overrides.append(f"rank={case.rank}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        # The cache folder is <name>-<hash of the architecture>: one build per architecture, whatever the case.
        cfg.model.name = f"bench-{case.architecture['model_type']}"
        cfg.model.architecture = dict(case.architecture)
    return validate(cfg)


@dataclass
class Prepared:
    cfg: object
    tokenizer: object
    tokenized: object
    task: str
    num_labels: int | None
    checkpoint: str


def prepare(case: Case, steps: int, results: str) -> Prepared:
    from lab import models
    from lab.data import load_task_data, tokenize

    cfg = compose_case(case, steps, results)
    cache = os.path.expanduser(cfg.paths.cache)
    data = load_task_data(cfg.dataset, cache)
    checkpoint = models.checkpoint_path(cfg.model, cache)
    tokenizer = models.load_tokenizer(checkpoint, cfg.model)
    tokenized = tokenize(data, tokenizer, cfg.model.max_length)
    lengths = {len(ids) for ids in tokenized["train"]["input_ids"]}
    if lengths != {case.seq}:
        raise RuntimeError(f"{case.name}: rows of {sorted(lengths)} tokens, expected exactly {case.seq}")
    return Prepared(cfg, tokenizer, tokenized, data.task, len(data.label_names) if data.label_names else None,
                    checkpoint)


def build_model(prep: Prepared, device: str):
    """lab.train.train_and_evaluate's model: seed, load (4-bit for QLoRA), apply the method."""
    from transformers import set_seed

    from lab import methods, models

    cfg = prep.cfg
    set_seed(cfg.seed)
    dtype = methods.compute_dtype(cfg, device)
    quant = methods.quantization_config(cfg, device, list(cfg.model.head_modules))
    model = models.load_model(prep.checkpoint, cfg.model, dtype, quant, prep.num_labels, device)
    return methods.apply_method(model, cfg, device)


def suite_arguments(prep: Prepared, device: str, notes: list[str]):
    from lab import record as rec
    from lab.train import training_arguments

    return training_arguments(prep.cfg, device, rec.run_id(prep.cfg), [], notes)


def step_clock(device: str):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall-clock time at the start and the end of every optimizer step."""

        def __init__(self):
            self.begin, self.end = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.end.append(time.perf_counter())

    return StepClock()


def suite_trainer(model, prep: Prepared, device: str, extra_callbacks=()):
    """The Trainer of lab.train.train_and_evaluate, with the same arguments, collator and callbacks."""
    from transformers import PrinterCallback, Trainer

    from lab.data import collator
    from lab.train import training_callbacks

    args = suite_arguments(prep, device, [])
    trainer = Trainer(model=model, args=args, train_dataset=prep.tokenized["train"],
                      eval_dataset=prep.tokenized["validation"], data_collator=collator(prep.tokenizer, prep.task),
                      callbacks=[*training_callbacks(device), *extra_callbacks])
    trainer.remove_callback(PrinterCallback)
    return trainer


def suite_window(model, prep: Prepared, device: str, warmup: int, steps: int) -> list[float]:
    """Seconds per step of the suite's Trainer over `steps` steps after `warmup` steps."""
    clock = step_clock(device)
    trainer = suite_trainer(model, prep, device, [clock])
    trainer.args.max_steps = warmup + steps
    trainer.train()
    ends = clock.end
    if len(ends) != warmup + steps:
        raise RuntimeError(f"the Trainer ran {len(ends)} steps, expected {warmup + steps}")
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def plain_optimizer(args, params):
    import torch

    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                  weight_decay=args.weight_decay)
    if args.optim == "paged_adamw_32bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW32bit(params, **kwargs)
    if args.optim != "adamw_torch":
        raise RuntimeError(f"no plain-loop twin for optimizer {args.optim}")
    return torch.optim.AdamW(params, **kwargs)


def plain_stepper(model, prep: Prepared, device: str, clip: float | None = None, parts: dict | None = None):
    """One step of a hand-written loop on the same model, rows and optimizer class; returns its seconds.

    `clip` adds `torch.nn.utils.clip_grad_norm_` between backward and the optimizer, the one piece of
    the suite's recipe (trainer.max_grad_norm) the bare loop leaves out."""
    import torch

    args = suite_arguments(prep, device, [])
    batch = args.per_device_train_batch_size
    columns = prep.tokenized["train"][:]
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
        if parts is not None:
            for key, value in (("collate", t1 - t0), ("forward + backward" + (" + clip" if clip else ""), t2 - t1),
                               ("optimizer + zero_grad", t3 - t2)):
                parts.setdefault(key, []).append(value)
        return t3 - t0

    return step


def plain_window(model, prep: Prepared, device: str, warmup: int, steps: int, parts: dict | None = None) -> list[float]:
    """Seconds per step of the plain loop over `steps` steps after `warmup` steps."""
    timed: dict = {}
    step = plain_stepper(model, prep, device, parts=timed)
    times = [step() for _ in range(warmup + steps)]
    if parts is not None:
        for key, values in timed.items():
            parts.setdefault(key, []).extend(values[warmup:])
    return times[warmup:]


def interleaved(model, prep: Prepared, device: str, warmup: int, steps: int, clip: float | None) -> dict:
    """Suite, plain and plain + clip steps taken in turn, step by step, in one Trainer run.

    After each of the suite's optimizer steps a callback runs one step of each plain twin (the twins
    take turns going first). The suite's step time is the period between its step ends less the time
    the twins took inside it, so drift in the machine's speed hits all three alike."""
    from transformers import TrainerCallback

    twins = {"plain": plain_stepper(model, prep, device)}
    if clip:
        twins["plain + clip"] = plain_stepper(model, prep, device, clip=clip)
    times: dict = {name: [] for name in ["suite", *twins]}
    ends, inserted = [], []

    class TakeTurns(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            ends.append(time.perf_counter())
            names = list(twins) if len(ends) % 2 else list(twins)[::-1]
            for name in names:
                times[name].append(twins[name]())
            inserted.append(time.perf_counter() - ends[-1])

    trainer = suite_trainer(model, prep, device, [TakeTurns()])
    trainer.args.max_steps = warmup + steps
    trainer.train()
    if len(ends) != warmup + steps:
        raise RuntimeError(f"the Trainer ran {len(ends)} steps, expected {warmup + steps}")
    times["suite"] = [ends[i] - ends[i - 1] - inserted[i - 1] for i in range(1, len(ends))]
    # The suite's first period follows its first step; drop as many twin steps as suite steps are dropped.
    return {"suite": times["suite"][warmup - 1:], **{k: v[warmup:] for k, v in times.items() if k != "suite"}}


# ---- FLOPs --------------------------------------------------------------------------------------

def step_flops(model, cfg, batch: int, seq: int) -> dict:
    """Matmul FLOPs of one training step, by the rule in the module docstring."""
    import torch

    heads = set(cfg.model.head_modules)
    linear = {"trainable": 0, "frozen": 0}
    params = {"trainable": 0, "frozen": 0}
    for name, module in model.named_modules():
        parts = name.split(".")
        # peft keeps an unused copy of a head it trains (modules_to_save): it never runs.
        if "original_module" in parts or not isinstance(module, torch.nn.Linear):
            continue
        role = "trainable" if module.weight.requires_grad else "frozen"
        rows = batch if heads.intersection(parts) else batch * seq
        params[role] += module.in_features * module.out_features
        linear[role] += (6 if role == "trainable" else 4) * module.in_features * module.out_features * rows
    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    attention = 3 * 4 * seq * d_attn * config.num_hidden_layers * batch * seq
    return {"total": linear["trainable"] + linear["frozen"] + attention, "linear_trainable": linear["trainable"],
            "linear_frozen": linear["frozen"], "attention": attention,
            "matmul_params_trainable": params["trainable"], "matmul_params_frozen": params["frozen"]}


# ---- one measured case --------------------------------------------------------------------------

def measure_case(case: Case, plan: Plan, device: str, results: str, plain: bool, repeats: int, steps: int,
                 log) -> dict:
    """Suite step times for one case (with `plain`: interleaved with its plain twins), memory and FLOPs."""
    from lab import memory, methods

    prep = prepare(case, plan.warmup + repeats * steps, results)
    release_memory()
    peak = memory.PeakMemory(device)
    model = build_model(prep, device)
    load_peak = peak.read()
    # Memory first, from a short suite-only run: the twins' own optimizer state must not count.
    probe = suite_trainer(model, prep, device)
    probe.args.max_steps = plan.warmup + 1
    probe.train()
    train_peak = peak.read()
    del probe
    args = suite_arguments(prep, device, [])
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    if plain:
        per_step = interleaved(model, prep, device, plan.warmup, repeats * steps, args.max_grad_norm or None)
    else:
        per_step = {"suite": [t for _ in range(repeats) for t in suite_window(model, prep, device, plan.warmup, steps)]}
    cpu_per_wall = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    # Windows of `steps` consecutive steps: their means are the repeats that median [min-max] summarise.
    windows = {k: [statistics.fmean(v[i * steps:(i + 1) * steps]) for i in range(repeats)] for k, v in per_step.items()}
    flops = step_flops(model, prep.cfg, case.batch, case.seq)
    out = {
        "case": asdict(case),
        "params": methods.count_params(model),
        "tokens_per_step": case.batch * case.seq,
        "flops_per_step": flops,
        "suite_step_s": summarize(windows["suite"]),
        "suite_step_s_raw": per_step["suite"],
        "memory": train_peak,
        "memory_after_load": load_peak,
        "cpu_per_wall": cpu_per_wall,
        "weights": memory.weight_bytes(model),
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
    log(f"  {case.name} {case.method} b{case.batch}x{case.seq}: suite {out['suite_step_s']['median']:.4f} s/step"
        + "".join(f", {t} {out[t.replace(' + ', '_') + '_step_s']['median']:.4f}" for t in ("plain", "plain + clip")
                  if t in windows))
    del model
    release_memory()
    return out


def breakdown_case(case: Case, plan: Plan, device: str, results: str, steps: int) -> dict:
    """Where a suite step's time goes, against the plain loop's parts (instrumented run, not the timed one)."""
    from transformers import TrainerCallback

    prep = prepare(case, plan.warmup + steps, results)
    model = build_model(prep, device)
    marks: list[dict] = []

    class Marks(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            sync(device)
            marks[-1]["pre_optimizer"] = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            sync(device)
            marks[-1]["optimizer_done"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            marks[-1]["step_end"] = time.perf_counter()

    trainer = suite_trainer(model, prep, device, [Marks()])

    def timed(method, before: str, after: str):
        def wrapper(*args, **kwargs):
            if before == "fetch_start":
                marks.append({})
            marks[-1][before] = time.perf_counter()
            result = method(*args, **kwargs)
            sync(device)
            marks[-1][after] = time.perf_counter()
            return result
        return wrapper

    # Instance attributes shadow the Trainer's methods for this one object only.
    trainer.get_batch_samples = timed(trainer.get_batch_samples, "fetch_start", "fetch_end")
    trainer.training_step = timed(trainer.training_step, "fwd_start", "fwd_end")
    trainer._clip_grad_norm = timed(trainer._clip_grad_norm, "clip_start", "clip_end")
    trainer.train()
    spans = {
        "fetch + collate (get_batch_samples)": ("fetch_start", "fetch_end"),
        "step-begin callbacks": ("fetch_end", "fwd_start"),
        "forward + backward (training_step)": ("fwd_start", "fwd_end"),
        "token count + FLOP estimate": ("fwd_end", "clip_start"),
        "gradient clipping (max_grad_norm)": ("clip_start", "clip_end"),
        "grad-norm read + pre-optimizer callbacks": ("clip_end", "pre_optimizer"),
        "optimizer.step": ("pre_optimizer", "optimizer_done"),
        "lr scheduler + zero_grad + step-end callbacks": ("optimizer_done", "step_end"),
    }
    suite_parts = {k: [] for k in spans}
    suite_parts["logging / eval / save check"] = []
    timed_marks = marks[plan.warmup:]
    for i, m in enumerate(timed_marks):
        for key, (a, b) in spans.items():
            suite_parts[key].append(m[b] - m[a])
        following = marks[plan.warmup + i + 1]["fetch_start"] if plan.warmup + i + 1 < len(marks) else None
        if following is not None:
            suite_parts["logging / eval / save check"].append(following - m["step_end"])
    plain_parts: dict = {}
    plain_window(model, prep, device, plan.warmup, steps, plain_parts)
    logging_steps = prep.cfg.trainer.logging_steps
    del model, trainer
    release_memory()
    return {
        "case": asdict(case),
        "steps": steps,
        "logging_steps": logging_steps,
        "suite_ms": {k: 1e3 * statistics.median(v) for k, v in suite_parts.items() if v},
        "suite_ms_max": {k: 1e3 * max(v) for k, v in suite_parts.items() if v},
        "plain_ms": {k: 1e3 * statistics.median(v) for k, v in plain_parts.items()},
    }


# ---- start-up -----------------------------------------------------------------------------------

# Runs lab.train.main as the console script does, and prints wall-clock stamps: interpreter up,
# imports done, run() entered and left (wrapped by name: main() looks `run` up at call time), the
# Trainer's train begin/end and the first step's start and end, and exit. torch and transformers are
# imported before lab.train here, but the suite imports both before its first step anyway.
STARTUP_HOOK = r"""
import time
_t = time.time()
import atexit, sys
def _stamp(name, t=None):
    print(f"BENCH {name} {time.time() if t is None else t:.6f}", file=sys.stderr, flush=True)
_stamp("python_up", _t)
atexit.register(_stamp, "exit")
import transformers
from transformers import TrainerCallback

class _Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        _stamp("train_begin")
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 0:
            _stamp("first_step_begin")
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1:
            _stamp("first_step_end")
    def on_train_end(self, args, state, control, **kw):
        _stamp("train_end")

_init = transformers.Trainer.__init__
def _patched(self, *a, **kw):
    _init(self, *a, **kw)
    self.add_callback(_Clock())
transformers.Trainer.__init__ = _patched

import lab.train
_run = lab.train.run
def _timed_run(cfg):
    _stamp("run_begin")
    try:
        return _run(cfg)
    finally:
        _stamp("run_end")
lab.train.run = _timed_run
_stamp("imports_done")
sys.argv = ["lab-train", *sys.argv[1:]]
sys.exit(lab.train.main())
"""


def lab_train(overrides: list[str], workdir: str) -> dict:
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", STARTUP_HOOK, *overrides], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"lab-train {' '.join(overrides)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    events: dict[str, list[float]] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH "):
            _, name, stamp = line.split()
            events.setdefault(name, []).append(float(stamp) - started)
    return {"process_s": ended - started, "events_s": events}


def timeline(events: dict, process_s: float) -> list[dict]:
    """Phases of each job in seconds, from the stamps of one process (one job, or a multirun's jobs)."""
    jobs = []
    for i, run_begin in enumerate(events["run_begin"]):
        e = {k: v[i] for k, v in events.items() if k not in ("python_up", "imports_done", "exit") and i < len(v)}
        last = i == len(events["run_begin"]) - 1
        before = events["run_end"][i - 1] if i else events["imports_done"][0]
        phases = {
            "python start": events["python_up"][0] if i == 0 else None,
            "imports": events["imports_done"][0] - events["python_up"][0] if i == 0 else None,
            "Hydra (compose / launch job)": run_begin - before,
            "config, data, model, Trainer": e["train_begin"] - run_begin,
            "to first step": e["first_step_begin"] - e["train_begin"],
            "first step": e["first_step_end"] - e["first_step_begin"],
            "other steps": e["train_end"] - e["first_step_end"],
            "evaluate, checks, record": e["run_end"] - e["train_end"],
            "exit": (events["exit"][0] if "exit" in events else process_s) - e["run_end"] if last else None,
            # atexit handlers run first; then the interpreter frees modules and joins threads.
            "teardown": process_s - events["exit"][0] if last and "exit" in events else None,
        }
        jobs.append({"phases": phases, "command_to_first_step_s": e["first_step_begin"],
                     "job_s": sum(v for v in phases.values() if v is not None)})
    return jobs


# Imports the suite's stack and exits; with "freeze", the objects alive at exit are moved out of the
# garbage collector's reach first, to tell how much of the exit is the collector's final passes.
TEARDOWN_PROBE = r"""
import atexit, gc, sys, time
import lab.train
from transformers import Trainer
import peft, bitsandbytes, datasets
if sys.argv[1] == "freeze":
    atexit.register(gc.freeze)
atexit.register(lambda: print(f"BENCH exit {time.time():.6f}", file=sys.stderr, flush=True))
print(f"BENCH objects {len(gc.get_objects())}", file=sys.stderr, flush=True)
"""


def teardown_probe(workdir: str) -> dict:
    out = {}
    for variant in ("plain", "freeze"):
        started = time.time()
        proc = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, variant], cwd=workdir, capture_output=True,
                              text=True, timeout=600)
        ended = time.time()
        stamps = dict(line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("BENCH "))
        out[variant] = {"process_s": ended - started, "after_exit_handlers_s": ended - float(stamps["exit"]),
                        "gc_objects": int(stamps["objects"])}
    return out


def measure_startup(jobs: int, workdir: str, log) -> dict:
    base = ["model=tiny-llama", "dataset=synthetic-lm", "method=lora", "logger=none", "trainer.max_steps=5",
            "skip_finished=false"]
    separate = []
    for seed in range(jobs):
        run = lab_train([*base, f"seed={seed}", f"paths.results={os.path.join(workdir, f'single-{seed}')}",
                         f"hydra.run.dir={os.path.join(workdir, 'hydra', f'single-{seed}')}"], workdir)
        run["jobs"] = timeline(run["events_s"], run["process_s"])
        separate.append(run)
        log(f"  single process seed={seed}: {run['process_s']:.1f} s, first step at "
            f"{run['jobs'][0]['command_to_first_step_s']:.1f} s")
    multi = lab_train(["-m", *base, "seed=" + ",".join(str(s) for s in range(jobs)),
                       f"paths.results={os.path.join(workdir, 'multi')}",
                       f"hydra.sweep.dir={os.path.join(workdir, 'hydra', 'multi')}"], workdir)
    multi["jobs"] = timeline(multi["events_s"], multi["process_s"])
    log(f"  multirun of {jobs}: {multi['process_s']:.1f} s")
    teardown = teardown_probe(workdir)
    log(f"  exit after imports: {teardown['plain']['after_exit_handlers_s']:.2f} s, "
        f"{teardown['freeze']['after_exit_handlers_s']:.2f} s with gc.freeze()")
    return {"jobs": jobs, "overrides": base, "separate": separate, "multirun": multi, "teardown": teardown}


# ---- report -------------------------------------------------------------------------------------

def fmt_range(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    return f"{s['median'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f}]"


def gflops(x: float) -> str:
    return f"{x / 1e9:.1f}"


def mem_bytes(memory: dict | None) -> float | None:
    if not memory:
        return None
    return memory.get("peak_rss_above_baseline", memory.get("peak_allocated_above_baseline"))


def millions(n: int) -> str:
    return f"{n / 1e6:.3g}M"


def mb(nbytes: float | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 1e6:.0f}"


def render(report: dict) -> str:
    env, plan = report["environment"], report["plan"]
    prov = env["provenance"]
    lines = ["# Benchmarks", "",
             f"Generated by `{report['command']}` on {report['date']}, in one process run "
             f"({report['elapsed_s'] / 60:.1f} min). Methodology: the docstring of `analysis/benchmark.py`; raw "
             f"numbers: `{report['files']['json']}`.", "",
             "## Machine", "",
             f"- device: {prov['device']} ({prov['device_name']}), {prov['cpu_count']} logical CPUs, "
             f"torch threads {env['threads']}",
             f"- CPU: {env['cpu_model']}" + (f"; scheduling: {env['scheduling']}" if env.get("scheduling") else ""),
             f"- load average (1/5/15 min) at start: {' / '.join(f'{x:.2f}' for x in env['loadavg_start'])}; "
             f"at end: {' / '.join(f'{x:.2f}' for x in env['loadavg_end'])}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v)
             + f", python {prov['python']}",
             f"- git commit {prov['git_commit']} (dirty: {prov['git_dirty']}); {prov['platform']}",
             f"- repeats: {plan['repeats']} windows of {plan['steps']} steps after {plan['warmup']} warm-up "
             f"step(s) ({plan['small_steps']}-step windows for the small model); figures are median [min–max] "
             "over the windows", ""]

    peak = report.get("peak")
    if peak:
        lines += ["## Hardware limit: dense matmul", "",
                  f"`torch.matmul` of n×n matrices, {env['threads']} threads, 2·n³ FLOPs, best of 5 after one warm-up.", "",
                  "| dtype | n | GFLOP/s median [min–max] |", "|---|---|---|"]
        for dtype, d in peak.items():
            for row in d["sizes"]:
                lines.append(f"| {dtype} | {row['n']} | {row['flops_per_s_median'] / 1e9:.1f} "
                             f"[{row['flops_per_s_min'] / 1e9:.1f}–{row['flops_per_s_max'] / 1e9:.1f}] |")
        lines += ["", "Peak used for MFU: " + ", ".join(f"{k} {gflops(v['peak_flops_per_s'])} GFLOP/s"
                                                     for k, v in peak.items()), ""]

    methods = report.get("methods")
    if methods:
        lines += ["## Overhead: the suite's step against a plain torch + peft loop", "",
                  "The suite's Trainer step, a plain loop's step (forward, backward, optimizer, zero_grad) and the "
                  "plain loop with the suite's gradient clipping (`trainer.max_grad_norm`), taken in turn step by "
                  "step in one run (see `interleaved`). Step time = steady-state period between optimizer-step "
                  "ends for the suite (data, collation, logging and callbacks included), the whole step for the "
                  "plain loops. Ratio = suite throughput / plain throughput, per window; target ≥ 0.97 against "
                  "the loop that does the same work (plain + clip).", "",
                  "| shape | method | batch×seq | suite s/step | plain s/step | plain + clip s/step "
                  "| clipping, ms/step | suite / plain | suite / (plain + clip) | CPU/wall |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            c = m["case"]
            clipped = "plain_clip_step_s" in m
            clip_ms = 1e3 * (m["plain_clip_step_s"]["median"] - m["plain_step_s"]["median"]) if clipped else None
            lines.append(f"| {c['name']} | {c['method']} | {c['batch']}×{c['seq']} | {fmt_range(m['suite_step_s'], digits=4)} "
                         f"| {fmt_range(m['plain_step_s'], digits=4)} "
                         f"| {fmt_range(m['plain_clip_step_s'], digits=4) if clipped else '–'} "
                         f"| {f'{clip_ms:.1f}' if clipped else '–'} "
                         f"| {fmt_range(m['suite_over_plain_throughput'])} "
                         f"| {fmt_range(m['suite_over_plain_clip_throughput']) if clipped else '–'} "
                         f"| {m['cpu_per_wall']:.2f} |")
        peak_name = "bfloat16" if any(m["precision"] == "bf16" for m in methods) and peak and "bfloat16" in peak else "float32"
        peak_rate = peak[peak_name]["peak_flops_per_s"] if peak else None
        lines += ["", "## Method costs (the suite's step)", "",
                  "Tokens are non-padding input tokens. FLOPs per step by the rule in the docstring "
                  "(trainable linear 6·in·out·t, frozen 4·in·out·t, attention 12·seq·d_attn per token and "
                  f"layer); MFU against the {peak_name} matmul peak. Weights: the exact bytes the parameters hold "
                  "(4-bit codes and their constants for QLoRA; MB = 1e6 bytes). Peak memory: the process's peak "
                  "resident set above the pre-load baseline, after loading the model and after the first "
                  "training steps (gradients, optimizer state, activations). On the CPU that resident set also "
                  "holds the pages of the memory-mapped checkpoint that loading read, which is why QLoRA's "
                  "peak shows no 4-bit saving here although its weights column does; the run ledger "
                  "(`python -m analysis.ledger_vs_estimate`) splits a run's bytes exactly.", "",
                  "| shape | method | batch×seq | params trainable / total | s/step | tokens/s | GFLOP/step | GFLOP/s | MFU "
                  "| weights MB | peak MB: load / training | optimizer |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            c, f, s = m["case"], m["flops_per_step"], m["suite_step_s"]
            rate = f["total"] / s["median"]
            mem = mem_bytes(m["memory"])
            mfu = f"{100 * rate / peak_rate:.0f}%" if peak_rate else "–"
            lines.append(f"| {c['name']} | {c['method']} | {c['batch']}×{c['seq']} | {millions(m['params']['trainable'])} / "
                         f"{millions(m['params']['total'])} | {fmt_range(s)} | {m['tokens_per_step'] / s['median']:.0f} "
                         f"| {gflops(f['total'])} | {gflops(rate)} | {mfu} | {mb(sum(m['weights'].values()))} "
                         f"| {mb(mem_bytes(m.get('memory_after_load')))} / {mb(mem)} | {m['optimizer']} |")
        lines += ["", "Ratios of step time (the suite's path, medians):", "",
                  "| shape | LoRA / full time | theory (FLOPs) | QLoRA / LoRA time | QLoRA / LoRA weight bytes "
                  "| QLoRA / LoRA peak RSS |",
                  "|---|---|---|---|---|---|"]
        for shape in dict.fromkeys(m["case"]["name"] for m in methods):
            by = {m["case"]["method"]: m for m in methods if m["case"]["name"] == shape}
            if not {"full", "lora", "qlora"} <= set(by):
                continue
            t = {k: by[k]["suite_step_s"]["median"] for k in by}
            theory = by["lora"]["flops_per_step"]["total"] / by["full"]["flops_per_step"]["total"]
            mq, ml = mem_bytes(by["qlora"]["memory"]), mem_bytes(by["lora"]["memory"])
            wq, wl = (sum(by[k]["weights"].values()) for k in ("qlora", "lora"))
            lines.append(f"| {shape} | {t['lora'] / t['full']:.2f} | {theory:.2f} | {t['qlora'] / t['lora']:.2f} "
                         f"| {wq / wl:.2f} | {f'{mq / ml:.2f}' if mq and ml else '–'} |")
        lines.append("")

    breakdown = report.get("breakdown")
    if breakdown:
        lines += ["## Where a step's time goes (instrumented run)", "",
                  "A separate run with timestamps around the Trainer's parts (`get_batch_samples`, "
                  "`training_step`, `_clip_grad_norm`, callbacks) and the plain loop's; medians in ms per step "
                  "(the logging row: median, and max = a step that logs).", ""]
        for b in breakdown:
            c = b["case"]
            lines += [f"**{c['name']} {c['method']} {c['batch']}×{c['seq']}** ({b['steps']} steps, "
                      f"logging every {b['logging_steps']})", "",
                      "| suite part | ms (median) | ms (max) |", "|---|---|---|"]
            for k, v in b["suite_ms"].items():
                lines.append(f"| {k} | {v:.2f} | {b['suite_ms_max'][k]:.2f} |")
            lines.append(f"| **sum** | {sum(b['suite_ms'].values()):.2f} | |")
            lines += ["", "| plain part | ms (median) |", "|---|---|"]
            for k, v in b["plain_ms"].items():
                lines.append(f"| {k} | {v:.2f} |")
            lines += [f"| **sum** | {sum(b['plain_ms'].values()):.2f} |", ""]

    scaling = report.get("scaling")
    if scaling:
        lines += ["## Scaling", "", f"Random-init Llama family, the suite's step, batch×seq "
                  f"{scaling['batch']}×{scaling['seq']}; plot: `{report['files']['png']}`.", "",
                  "| model | params | method | s/step | tokens/s | GFLOP/s | peak memory MB |", "|---|---|---|---|---|---|---|"]
        for m in scaling["by_size"]:
            c, s = m["case"], m["suite_step_s"]
            mem = mem_bytes(m["memory"])
            lines.append(f"| {c['name']} | {millions(m['params']['total'])} | {c['method']} | {fmt_range(s, digits=4)} "
                         f"| {m['tokens_per_step'] / s['median']:.0f} | {gflops(m['flops_per_step']['total'] / s['median'])} "
                         f"| {mb(mem)} |")
        lines += ["", f"Sequence length, {scaling['seq_model']}, batch {scaling['batch']}:", "",
                  "| seq | method | s/step | tokens/s | GFLOP/s | peak memory MB |", "|---|---|---|---|---|---|"]
        for m in scaling["by_seq"]:
            c, s = m["case"], m["suite_step_s"]
            mem = mem_bytes(m["memory"])
            lines.append(f"| {c['seq']} | {c['method']} | {fmt_range(s, digits=4)} | {m['tokens_per_step'] / s['median']:.0f} "
                         f"| {gflops(m['flops_per_step']['total'] / s['median'])} | {mb(mem)} |")
        lines += ["", f"![scaling]({os.path.basename(report['files']['png'])})", ""]

    startup = report.get("startup")
    if startup:
        jobs, sep, multi = startup["jobs"], startup["separate"], startup["multirun"]
        phases = list(sep[0]["jobs"][0]["phases"])
        lines += ["## Start-up", "",
                  f"`lab-train {' '.join(startup['overrides'])}` (tiny-llama, 5 steps), timed from the command by "
                  "wall-clock stamps the child prints (see `STARTUP_HOOK`); seconds. A multirun's later jobs pay "
                  "no interpreter start or imports.", "",
                  "| run | " + " | ".join(phases) + " | job total | command → first step |",
                  "|---" * (len(phases) + 3) + "|"]
        rows = [(f"separate process {i}", r["jobs"][0]) for i, r in enumerate(sep)]
        rows += [(f"`-m` job {i}", j) for i, j in enumerate(multi["jobs"])]
        for label, j in rows:
            cells = ["–" if v is None else f"{v:.2f}" for v in j["phases"].values()]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {j['job_s']:.2f} | {j['command_to_first_step_s']:.2f} |")
        sep_total = sum(r["process_s"] for r in sep)
        lines += ["", f"{jobs} separate processes: {sep_total:.1f} s; `lab-train -m` with the same {jobs} jobs in one "
                  f"process: {multi['process_s']:.1f} s, i.e. {(sep_total - multi['process_s']) / jobs:.1f} s per job "
                  f"less ({100 * (1 - multi['process_s'] / sep_total):.0f}%).", ""]
        t = startup.get("teardown")
        if t:
            lines += [f"Teardown: a process that only imports the suite's stack ({t['plain']['gc_objects']:,} objects "
                      f"tracked by the garbage collector) takes {t['plain']['after_exit_handlers_s']:.2f} s to exit "
                      f"after its exit handlers; {t['freeze']['after_exit_handlers_s']:.2f} s when an exit handler "
                      "calls `gc.freeze()` first, so most of the teardown is the collector's final passes over "
                      "those objects.", ""]
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling = report["scaling"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for method in METHODS:
        rows = [m for m in scaling["by_size"] if m["case"]["method"] == method]
        if rows:
            x = [m["params"]["total"] / 1e6 for m in rows]
            axes[0].plot(x, [m["suite_step_s"]["median"] for m in rows], "o-", label=method)
            axes[1].plot(x, [mem_bytes(m["memory"]) / 1e6 for m in rows], "o-", label=method)
        rows = [m for m in scaling["by_seq"] if m["case"]["method"] == method]
        if rows:
            axes[2].plot([m["case"]["seq"] for m in rows], [m["suite_step_s"]["median"] for m in rows], "o-", label=method)
    axes[0].set(xscale="log", yscale="log", xlabel="parameters (M)", ylabel="s / step",
                title=f"step time, batch {scaling['batch']} × seq {scaling['seq']}")
    axes[1].set(xscale="log", yscale="log", xlabel="parameters (M)", ylabel="peak memory above baseline (MB)",
                title="peak memory")
    axes[2].set(xscale="log", yscale="log", xlabel="sequence length", ylabel="s / step",
                title=f"step time vs sequence, {scaling['seq_model']}, batch {scaling['batch']}")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"lab training step on {report['environment']['provenance']['device_name']}, "
                 f"{report['environment']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def scheduling() -> str | None:
    """This process's nice value and, on Linux, its session's autogroup weight: on a shared machine
    the autogroup, not the nice value, decides the benchmark's share of the cores."""
    try:
        with open("/proc/self/autogroup") as f:
            return f"nice {os.nice(0)}, {f.read().strip()}"
    except OSError:
        return f"nice {os.nice(0)}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m analysis.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (about 2 min)")
    parser.add_argument("--smoke", action="store_true", help="tiny models only: checks the code, numbers mean nothing")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=None, help="timed windows per case")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before each window")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"), help="folder for the .md, .json and .png")
    parser.add_argument("--render", metavar="JSON", help="measure nothing: rewrite the .md (and .png) beside an "
                        "earlier run's JSON, after a change to the report's layout")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        folder = os.path.dirname(os.path.abspath(args.render))
        if "scaling" in report:
            plot(report, os.path.join(folder, report["files"]["png"]))
        with open(os.path.join(folder, report["files"]["md"]), "w") as f:
            f.write(render(report))
        return report
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")

    started = time.time()
    loadavg_start = os.getloadavg()
    import torch

    from lab import record as rec
    from lab.train import resolve_device

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = make_plan(mode)
    if device == "cuda" and mode != "smoke":
        plan.peak_sizes = [4096, 8192]
    for key in ("repeats", "steps", "warmup"):
        if getattr(args, key) is not None:
            setattr(plan, key, getattr(args, key))
    if plan.warmup < 1:
        parser.error("--warmup must be at least 1: the first step allocates optimizer state")
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    stem = "benchmarks" if mode == "full" else f"benchmarks-{mode}"
    os.makedirs(args.out, exist_ok=True)
    files = {k: os.path.join(args.out, f"{stem}.{k}") for k in ("md", "json", "png")}

    def log(message: str) -> None:
        print(f"[benchmark {time.time() - started:6.0f}s] {message}", flush=True)

    report: dict = {
        "command": "python -m analysis.benchmark" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": mode,
        "plan": asdict(plan),
        # Names relative to the report's own folder, so its links work wherever it is read.
        "files": {k: os.path.basename(v) for k, v in files.items()},
        "notes": [],
    }
    report["environment"] = {"provenance": rec.provenance(device), "threads": torch.get_num_threads(),
                             "loadavg_start": loadavg_start, "cpu_model": cpu_model(),
                             "scheduling": scheduling()}
    log(f"device {device}, {torch.get_num_threads()} threads, load average {loadavg_start}")
    if device == "cpu" and loadavg_start[0] > 0.5:
        report["notes"].append(f"1-minute load average {loadavg_start[0]:.2f} at start: other processes shared "
                               "the CPUs, so absolute timings are pessimistic (ratios are taken side by side)")

    with tempfile.TemporaryDirectory(prefix="lab-benchmark-") as tmp:
        results = os.path.join(tmp, "results")
        log("warm-up: one untimed step per method on a tiny model (lazy imports, allocator, thread pool)")
        for method in METHODS:
            measure_case(Case("warm-up", FAMILY["llama-1m"], method, 2, 16), plan, device, results, True, 1, 1,
                         lambda message: None)
        if "peak" in sections:
            log("matmul peak")
            report["peak"] = matmul_peak(device, plan.peak_sizes)
        if "methods" in sections:
            log("methods: suite vs plain, interleaved")
            cases = [Case(name, arch, method, batch, seq)
                     for name, (arch, batch, seq) in plan.shapes.items() for method in METHODS]
            report["methods"] = [measure_case(c, plan, device, results, True, plan.repeats, plan.steps, log)
                                 for c in cases]
            # Small steps expose per-step fixed costs; enough steps that the logging cadence falls inside.
            small_cases = [Case("llama-1m", FAMILY["llama-1m"], m, 8, 64) for m in METHODS]
            report["methods"] += [measure_case(c, plan, device, results, True, plan.repeats, plan.small_steps, log)
                                  for c in small_cases]
        if "breakdown" in sections:
            log("breakdown of a step")
            name, (arch, batch, seq) = next(iter(plan.shapes.items()))
            bert_name, (bert, bert_batch, bert_seq) = list(plan.shapes.items())[1]
            report["breakdown"] = [
                breakdown_case(Case("llama-1m", FAMILY["llama-1m"], "lora", 8, 64), plan, device, results,
                               plan.small_steps),
                breakdown_case(Case(bert_name, bert, "lora", bert_batch, bert_seq), plan, device, results,
                               plan.small_steps),
                breakdown_case(Case(name, arch, "full", batch, seq), plan, device, results, plan.steps),
            ]
        if "scaling" in sections:
            log("scaling")
            name, (arch, batch, seq) = next(iter(plan.shapes.items()))
            reuse = {(m["case"]["name"], m["case"]["method"]): m for m in report.get("methods", [])
                     if m["case"]["batch"] == batch and m["case"]["seq"] == seq}
            size_rows = []
            for model_name in plan.family:
                for method in METHODS:
                    if (model_name, method) in reuse:
                        size_rows.append(reuse[(model_name, method)])
                        continue
                    case = Case(model_name, FAMILY[model_name], method, batch, seq)
                    size_rows.append(measure_case(case, plan, device, results, False, plan.family_repeats,
                                                  plan.steps, log))
            seq_rows = [measure_case(Case(plan.seq_model, FAMILY[plan.seq_model], method, batch, s), plan, device,
                                     results, False, plan.family_repeats, plan.steps, log)
                        for s in plan.seq_lengths for method in METHODS]
            report["scaling"] = {"batch": batch, "seq": seq, "seq_model": plan.seq_model, "by_size": size_rows,
                                 "by_seq": seq_rows}
        if "startup" in sections:
            log("start-up")
            report["startup"] = measure_startup(plan.startup_jobs, tmp, log)

    report["environment"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = time.time() - started
    if "scaling" in report:
        plot(report, files["png"])
    with open(files["json"], "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(files["md"], "w") as f:
        f.write(render(report))
    log(f"wrote {files['md']}, {files['json']}" + (f", {files['png']}" if "scaling" in report else ""))
    return report


if __name__ == "__main__":
    main()
