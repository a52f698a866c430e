"""One run, top to bottom: compose -> build model -> apply method -> train -> evaluate -> record -> log.

    lab-train                                   # the embedded default (conf/train.yaml)
    lab-train method=qlora rank=16 model=tiny-llama dataset=synthetic-lm seed=1
    lab-train -m method=lora,qlora rank=1,4,16  # a sweep (Hydra multirun)

A job never raises into Hydra: a failure is recorded (`failed` / `oom` / `diverged`) and the
launcher goes on with the next job. An invalid config fails before any model is built. A run of
several processes (lab.distributed) is recorded by rank 0; a process whose run fails exits with status
1 after the record is written, so that the launcher stops the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import time
import traceback

import hydra
from omegaconf import DictConfig, OmegaConf

from lab import distributed
from lab import record as rec
from lab.config import ConfigError, check_results_writable, validate

log = logging.getLogger("lab")


class Diverged(RuntimeError):
    pass


# An absolute path: the console script imports lab.train as a package module, and Hydra would
# otherwise look for `conf` as a Python package.
CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> dict | None:
    try:
        record = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if not _in_multirun():
            sys.exit(2)
        return None  # a sweep goes on with its other jobs
    if record.get("status") in ("failed", "oom", "diverged") and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        sys.exit(1)  # the launcher then stops the other processes, which would wait for this one forever
    return record


def run(cfg: DictConfig) -> dict:
    """Train, evaluate and record one composed config; raises ConfigError for invalid input only."""
    started = time.time()
    cfg = validate(cfg)
    check_results_writable(cfg.paths.results)
    launched = distributed.launch(cfg)
    device = resolve_device(cfg.device)
    distributed.init(launched, device, cfg.distributed.backend)

    rid = rec.run_id(cfg)
    path = rec.record_path(cfg.paths.results, rid)
    if not launched.is_main:
        decision = distributed.share(launched)
        if decision != "train":
            return {"run_id": rid, "status": decision}
        return _run_and_record(cfg, rid, path, started, device, launched)
    # One worker per run id: two launcher workers given the same config never both train it.
    with rec.run_lock(path) as held:
        existing = rec.read_record(path) if held else None
        if not held:
            decision = "running-elsewhere"
        elif existing and existing["status"] == "ok" and cfg.skip_finished:
            decision = "finished-earlier"
        else:
            decision = "train"
        distributed.share(launched, decision)
        if decision == "running-elsewhere":
            print(f"[lab] {rid}: being run by another worker, skipped")
            return {"run_id": rid, "status": "running-elsewhere"}
        if decision == "finished-earlier":
            print(f"[lab] {rid}: finished earlier (ok), skipped; {path}")
            return existing
        if existing is None and os.path.exists(path):
            log.warning("unreadable record at %s (corrupt or from an older version): rerunning", path)
        return _run_and_record(cfg, rid, path, started, device, launched)


def _run_and_record(cfg: DictConfig, rid: str, path: str, started: float, device: str,
                    launched: distributed.Launch) -> dict:
    import torch

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    config = rec.scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
    record = {"schema": rec.SCHEMA, "run_id": rid, "status": None, "method": cfg.method.name, "rank": cfg.rank,
              "model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "notes": []}
    from lab.tracking import Tracker

    # One W&B run per run: only rank 0 opens it.
    tracked = cfg if launched.is_main else OmegaConf.merge(cfg, {"logger": {"name": "none"}})
    tracker = Tracker(tracked, rid, config, group=_sweep_group())
    failure = None
    try:
        record.update(train_and_evaluate(cfg, device, rid, tracker, record["notes"], launched))
        record["status"] = "ok"
    except ConfigError:  # found once the model's structure is known (e.g. a target it lacks)
        tracker.finish({"status": "invalid-config"})
        raise
    except Diverged as err:
        record.update(status="diverged", error=str(err))
    except Exception as err:
        record.update(status="oom" if is_out_of_memory(err) else "failed", error=f"{type(err).__name__}: {err}")
        failure = traceback.format_exc()
        log.error("run %s %s: %s", rid, record["status"], record["error"])
    if not launched.is_main:
        tracker.finish({})
        return record
    traceback_path = os.path.join(os.path.dirname(path), "traceback.txt")
    if failure:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(traceback_path, "w") as f:
            f.write(failure)
    elif os.path.exists(traceback_path):
        os.unlink(traceback_path)  # left by an earlier failed attempt of this run
    tracker.finish({"status": record["status"], **record.get("metrics", {})})
    record["timing"] = {**record.get("timing", {}), "wall_seconds": round(time.time() - started, 3)}
    record["logging"] = tracker.info()
    record["provenance"] = rec.provenance(device)
    record["config"] = config
    rec.write_json_atomic(path, record)
    print(summary(record, path))
    return record


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError that says so."""
    import torch

    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def resolve_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", requested, "cpu or auto: torch sees no CUDA device here")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def train_and_evaluate(cfg: DictConfig, device: str, rid: str, tracker, notes: list[str],
                       launched: distributed.Launch | None = None) -> dict:
    import datasets
    import torch
    from transformers import PrinterCallback, Trainer, set_seed
    from transformers.utils import logging as hf_logging
    from transformers.trainer_utils import get_last_checkpoint

    from lab import evaluation, memory, methods, models
    from lab.data import collator, load_task_data, tokenize

    launched = launched or distributed.Launch("none", 1, 0, 0)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    cache = os.path.expanduser(cfg.paths.cache)
    data = load_task_data(cfg.dataset, cache)
    checkpoint = models.checkpoint_path(cfg.model, cache)
    tokenizer = models.load_tokenizer(checkpoint, cfg.model)
    tokenized = tokenize(data, tokenizer, cfg.model.max_length)

    set_seed(cfg.seed)
    peak = memory.PeakMemory(device)
    dtype = methods.compute_dtype(cfg, device)
    if device == "cpu" and dtype != torch.float32:
        note = (f"compute dtype {str(dtype).removeprefix('torch.')} on the CPU: expect it to run several times "
                "slower than float32 on most CPUs (method.quant.compute_dtype=auto picks float32 here)")
        notes.append(note)
        log.warning(note)
    num_labels = len(data.label_names) if data.label_names else None

    def load_base(quantization=None):
        return models.load_model(checkpoint, cfg.model, dtype, quantization, num_labels, device)

    model = load_base(methods.quantization_config(cfg, device, list(cfg.model.head_modules)))
    model = methods.apply_method(model, cfg, device)
    params = methods.count_params(model)
    frozen_before = _frozen_digest(model) if cfg.method.name != "full" else None

    args = training_arguments(cfg, device, rid, tracker.report_to, notes)
    if "8bit" in args.optim:
        # The Trainer registers 32-bit overrides for embeddings with bitsandbytes' process-wide manager,
        # which keeps them by (group, index): an earlier job of this process would reach into this one's.
        import bitsandbytes as bnb

        bnb.optim.GlobalOptimManager.get_instance().initialize()
    callbacks = training_callbacks(device)
    timer = callbacks[-1]
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
                      data_collator=collator(tokenizer, data.task), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the record and the summary carry the numbers
    resume = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    if resume:
        notes.append(f"resumed from {resume}")
    train_output = trainer.train(resume_from_checkpoint=resume)
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    ran = distributed.what_ran(trainer, launched, cfg, notes)

    metrics = evaluation.evaluate(trainer, tokenized, data, tokenizer, cfg, device)
    metrics["train_loss"] = train_output.training_loss
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    metrics["first_logged_train_loss"] = losses[0] if losses else None
    metrics["last_logged_train_loss"] = losses[-1] if losses else None

    # Read before the merge check, which builds a second copy of the model that training never holds.
    peak_memory = peak.read()
    checks = {"frozen_base_unchanged": None, "merge_max_abs_logit_diff": None}
    if frozen_before is not None and ran["ran"] == "FSDP":
        notes.append("checks skipped under FSDP: each process holds only its shard of the base and adapters")
    elif frozen_before is not None and launched.is_main:
        checks["frozen_base_unchanged"] = _frozen_digest(model) == frozen_before
        checks["merge_max_abs_logit_diff"] = evaluation.merge_gap(model, load_base, tokenized["test"],
                                                                  collator(tokenizer, data.task), device)
    runtime = train_output.metrics["train_runtime"]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "params": params,
        "metrics": metrics,
        "memory": {"unit": "bytes", "scope": memory_scope(ran), "weights": memory.weight_bytes(model),
                   "peak": peak_memory,
                   **memory.ledger(trainer, model, cfg, device)},
        "optimizer": {"requested": choose_optimizer(cfg, device)[0], "trainer_optim": args.optim,
                      **optimizer_info(optimizer)},
        "checks": checks,
        "distributed": ran,
        "timing": {
            "train_seconds": round(runtime, 3),
            "train_steps": trainer.state.global_step,
            "step_seconds": timer.seconds,
            "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
            "train_tokens": tokens,
            "train_tokens_per_second": tokens / runtime if runtime else None,
            "tokens_counted": "non-padding input tokens of the training batches (prompt and response), "
                              "summed over all processes",
        },
        "label_names": data.label_names,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "compute_dtype": str(dtype).removeprefix("torch."),
    }


def training_arguments(cfg: DictConfig, device: str, rid: str, report_to: list[str], notes: list[str]):
    import torch
    from transformers import TrainingArguments

    t = cfg.trainer
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and device == "cpu":
        notes.append(f"trainer.precision={precision} on the CPU: computing in fp32 (bf16 matmul is several "
                     "times slower than fp32 on most CPUs)")
        precision = "fp32"
    optim = choose_optimizer(cfg, device, notes)[1]
    eval_steps = t.eval_steps
    return TrainingArguments(
        output_dir=os.path.join(cfg.paths.results, rid, "trainer"),
        max_steps=t.max_steps if t.epochs is None else -1,
        num_train_epochs=t.epochs or 1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        # transformers clips only when max_grad_norm > 0; 0 is its spelling of "off".
        max_grad_norm=t.max_grad_norm or 0.0,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must reach DivergenceGuard, not be averaged away
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps,
        save_total_limit=1,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        optim=optim,
        report_to=report_to,
        run_name=rid,
        seed=cfg.seed,
        data_seed=cfg.seed,
        include_num_input_tokens_seen="non_padding",
        **distributed.training_arguments(cfg),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def choose_optimizer(cfg: DictConfig, device: str, notes: list[str] | None = None) -> tuple[str, str]:
    """(requested, used): QLoRA asks for paged AdamW, which pages only on CUDA."""
    requested = cfg.method.get("optimizer") or "auto"
    notes = notes if notes is not None else []
    if requested == "auto":
        requested = "paged_adamw_32bit" if cfg.method.name == "qlora" else "adamw_torch"
        if requested != "adamw_torch" and OmegaConf.select(cfg, "distributed.mode") == "fsdp":
            requested = "adamw_torch"
            notes.append("method.optimizer=auto under FSDP: adamw_torch (bitsandbytes optimizers do not take "
                         "FSDP's sharded parameters)")
    used = requested
    if requested.startswith("paged_") and device != "cuda":
        # Only the paging is dropped: 8-bit AdamW keeps its 8-bit state on the CPU too.
        used = "adamw_8bit" if requested == "paged_adamw_8bit" else "adamw_torch"
        notes.append(f"optimizer {requested} needs CUDA to page; ran {used} on {device}")
    return requested, used


def optimizer_info(optimizer) -> dict:
    """The optimizer that really ran: its class, and for bitsandbytes its state bits and whether any
    state tensor really lives in paged (CUDA unified) memory."""
    from lab.ledger import optimizer_state_bytes

    inner = getattr(optimizer, "optimizer", optimizer)
    state = optimizer_state_bytes(inner)
    info = {"ran": state["optimizer"], "state_bits": None, "paged_requested": False,
            "paged": state["paged"] > 0, "paged_state_bytes": state["paged"]}
    if hasattr(inner, "args") and hasattr(inner.args, "optim_bits"):
        info.update(state_bits=int(inner.args.optim_bits), paged_requested=bool(inner.is_paged))
    return info


def memory_scope(ran: dict) -> str:
    if ran["world_size"] == 1:
        return "the one process"
    held = "its shards of the weights, gradients and optimizer state" if ran["ran"] == "FSDP" else "a full replica"
    return f"rank 0 of {ran['world_size']} processes, holding {held}"


def training_callbacks(device: str) -> list:
    """Every run's Trainer callbacks, the step timer last (analysis/benchmark.py times this same list)."""
    from lab import memory

    return [divergence_guard(), memory.ledger_probe(), step_timer(device)]


def step_timer(device: str):
    """A TrainerCallback keeping each optimizer step's wall time (seconds); on CUDA it waits for the
    step's kernels, so a step is not timed as the moment its launches were queued."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.last = None

        def _now(self):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = self._now()

        def on_step_end(self, args, state, control, **kwargs):
            now = self._now()
            self.seconds.append(round(now - self.last, 6))
            self.last = now

        def on_evaluate(self, args, state, control, **kwargs):
            self.last = self._now()  # evaluating or saving inside training is no step's time

        on_save = on_evaluate

    return StepTimer()


def _frozen_digest(model) -> str:
    """A hash over the bytes of every frozen parameter (4-bit packed data included)."""
    import torch

    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def divergence_guard():
    # Built on demand: importing transformers at module level would slow every config error.
    from transformers import TrainerCallback

    class DivergenceGuardCallback(TrainerCallback):
        """Stops a run whose training loss is NaN or infinite; the run is recorded as `diverged`."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise Diverged(f"training loss {loss} at step {state.global_step}")

    return DivergenceGuardCallback()


def _sweep_group() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return os.path.basename(os.path.dirname(hc.runtime.output_dir)) if hc.mode == RunMode.MULTIRUN else None
    except ValueError:
        return None


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def summary(record: dict, path: str) -> str:
    p, m, t = record.get("params", {}), record.get("metrics", {}), record.get("timing", {})
    peak = record.get("memory", {}).get("peak", {})
    peak_bytes = peak.get("peak_rss_above_baseline", peak.get("peak_allocated_above_baseline"))
    weights = record.get("memory", {}).get("weights", {})
    lines = [
        f"== {record['run_id']}  [{record['status']}]",
        f"method {record['method']}  rank {record['rank']}  model {record['model']}  dataset {record['dataset']}"
        f"  seed {record['seed']}",
    ]
    if p:
        lines.append(f"params: trainable {p['trainable']:,} / total {p['total']:,} "
                     f"({100 * p['trainable'] / p['total']:.3f}%)")
    if m:
        lines.append("metrics: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
    if weights:
        lines.append("weights (MB = 1e6 bytes): " + "  ".join(f"{k} {v / 1e6:.3f}" for k, v in weights.items()))
    if peak_bytes is not None:
        lines.append(f"peak memory above baseline ({peak.get('device')}): {peak_bytes / 1e6:.1f} MB (1e6 bytes)")
    checks = record.get("checks") or {}
    if checks.get("merge_max_abs_logit_diff") is not None:
        lines.append(f"checks: frozen base unchanged {checks['frozen_base_unchanged']}, merged vs on-the-fly "
                     f"max |logit diff| {checks['merge_max_abs_logit_diff']:.2e}")
    if t.get("train_seconds") is not None:
        lines.append(f"time: train {t['train_seconds']:.1f} s, wall {t['wall_seconds']:.1f} s, "
                     f"{t['train_tokens_per_second']:.0f} tokens/s (non-padding training tokens)")
    for note in record.get("notes", []):
        lines.append(f"note: {note}")
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    lines.append(f"record: {path}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
