"""One fine-tuning job, as named steps: setup (data, model, Trainer) -> train -> evaluate -> measure.

    job = FineTune(cfg, device, run_id)
    fields = job.run()          # setup_data, setup_model, setup_trainer, train, evaluate, measure

The Hydra app (lab.train) validates the config, holds the run's lock, maps a failure to a status and
writes the record; this module only runs the job. The benchmark (bench/) times this same setup and
Trainer: `setup_trainer` is the one place a Trainer is built.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager

import datasets
import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerState, TrainingArguments, set_seed
from transformers.integrations import WandbCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as hf_logging

from lab import convergence, distributed, evaluation, health, methods, models, rows
from lab.callbacks import AdaLoraBudget, DivergenceGuard, Diverged, SpaceGuard, StepTimer
from lab.config import ConfigError, check_max_length, hydra_mode
from lab.data import load_task_data
from lab.data.encode import collator, tokenize
from lab.decisions import choose_optimizer, compute_dtype, precision, resolve_device
from lab.memory import compare, ledger, preflight
from lab.memory.ledger import LedgerProbe, optimizer_state_bytes
from lab.memory.measure import PeakMemory, weight_bytes
from lab.provenance import provenance
from lab.record import data_identity, scrub_secrets, utc_now
from lab.tracking import Tracker

__all__ = ["FineTune", "resolve_device", "training_arguments"]
log = logging.getLogger("lab")
SINGLE_PROCESS = distributed.Launch("none", 1, 0, 0)
# Jobs this process started before the current one (a multirun's basic or joblib launcher reuses a
# process): its peak resident set then understates the job's own, as freed pages are reused.
_JOBS_IN_PROCESS = itertools.count()
# Steps whose logged loss the health rule reads as the final training loss (one point at the cadence
# of 10 the rule was set with; five at the default cadence of 100-step runs).
HEALTH_WINDOW = 10
# The default logging cadence: every 2 % of the steps (every 2nd of 100), a curve of about 50 points.
AUTO_LOGGING_RATIO = 0.02
# Trainer log entries that are totals of the run rather than points of its curve.
RUN_TOTALS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
# The parts of a job's wall time the record splits it into (timing.split_seconds); `write` is the rest
# of the job after its setup began (memory ledger, adapter save, provenance, W&B, the record).
PHASES = ("setup", "train", "evaluate", "checks")


class FineTune:
    """A configured job. Each step keeps what later steps need on `self`."""

    def __init__(self, cfg: DictConfig, device: str, run_id: str, launched: distributed.Launch = SINGLE_PROCESS,
                 group: str | None = None):
        self.cfg, self.device, self.run_id, self.launched = cfg, device, run_id, launched
        self.started = {"at": utc_now(), "loadavg": os.getloadavg(), "earlier_jobs": next(_JOBS_IN_PROCESS)}
        self.notes: list[str] = []
        self.phases: dict[str, float] = {}
        self.began: float | None = None  # time.time() when setup began
        self.cache = os.path.expanduser(cfg.paths.cache)
        self.config = scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
        # The bytes the run id was hashed from; setup_data checks that it read the same.
        self.data_identity = data_identity(cfg)
        # One W&B run per run: only rank 0 opens it.
        tracked = cfg if launched.is_main else OmegaConf.merge(cfg, {"logger": {"name": "none"}})
        self.tracker = Tracker(tracked, run_id, self.config, group)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)

    def run(self) -> dict:
        """The record's fields of a job that trained to the end."""
        self.began = time.time()
        with self.phase("setup"):
            preflight.check_fits(self.cfg, self.device)  # seconds, before a download or an allocation
            self.setup_data()
            self.setup_model()
            self.setup_trainer()
        with self.phase("train"):
            self.train()
        with self.phase("evaluate"):
            metrics = self.evaluate()
            health = self.judge_health(metrics)
            kept_rows = self.keep_rows()
        return {"metrics": metrics, "rows": kept_rows, "convergence": self.judge_convergence(), **health,
                **self.measure()}

    @contextmanager
    def phase(self, name: str):
        """Add the block's seconds to `name`'s share of the job's wall time."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - began

    def time_split(self, startup_from: float, now: float) -> dict:
        """Seconds of the job by part: `startup` from `startup_from` (the process's start, or the job's in
        a process that ran earlier jobs) to the setup, then each phase, and `write` the rest until `now`."""
        if self.began is None:  # failed before its setup
            return {"startup": round(now - startup_from, 3)}
        split = {"startup": round(self.began - startup_from, 3)}
        split.update({name: round(self.phases[name], 3) for name in PHASES if name in self.phases})
        split["write"] = round(now - self.began - sum(self.phases.values()), 3)
        return split

    # ---- setup ------------------------------------------------------------------------------------

    def setup_data(self) -> None:
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        self.data = load_task_data(self.cfg.dataset, self.cache)
        if self.data_identity and data_identity(self.cfg) != self.data_identity:
            raise ConfigError("dataset.path", self.cfg.dataset.path,
                              "a file that stays unchanged while its run starts (it changed after the run id "
                              "was taken from its bytes); run the command again")
        self.checkpoint = models.checkpoint_path(self.cfg.model, self.cache)
        self.tokenizer = models.load_tokenizer(self.checkpoint, self.cfg.model)
        check_max_length(self.cfg, models.position_limit(self.checkpoint, self.tokenizer))
        # Cached by tokenizer and split in <cache>/tokenized: a sweep's later jobs read it (lab.data.encode).
        self.tokenized = tokenize(self.data, self.tokenizer, self.cfg.model.max_length, cache_dir=self.cache)
        self.collate = collator(self.tokenizer, self.data.task)

    def setup_model(self) -> None:
        """The base (4-bit with base=4bit, as QLoRA's) with the method applied; the peak-memory baseline is taken first."""
        cfg = self.cfg
        set_seed(cfg.seed)
        self.peak = PeakMemory(self.device)
        self.dtype = compute_dtype(cfg, self.device, self.notes)
        for note in self.notes:
            log.warning(note)
        self.model = self.load_base(methods.quantization_config(cfg, self.device, list(cfg.model.head_modules)))
        steps = methods.training_steps(cfg, len(self.tokenized["train"]), self.launched.world_size)
        self.model = methods.apply_method(self.model, cfg, self.device, total_steps=steps)
        self.params = methods.count_params(self.model)
        self.frozen_before = frozen_digest(self.model) if cfg.method.peft_type is not None else None

    def load_base(self, quantization=None):
        num_labels = len(self.data.label_names) if self.data.label_names else None
        return models.load_model(self.checkpoint, self.cfg.model, self.dtype, quantization, num_labels, self.device)

    def setup_trainer(self, extra_callbacks=()) -> Trainer:
        """A Trainer over the model with the run's arguments and callbacks (plus `extra_callbacks`)."""
        self.args = training_arguments(self.cfg, self.device, self.run_id, self.tracker.report_to, self.notes)
        if "8bit" in self.args.optim:
            # The Trainer registers 32-bit overrides for embeddings with bitsandbytes' process-wide manager,
            # which keeps them by (group, index): an earlier job of this process would reach into this one's.
            import bitsandbytes as bnb  # seconds to import (it loads torch's compiler): only where used

            bnb.optim.GlobalOptimManager.get_instance().initialize()
        self.timer, self.probe = StepTimer(self.device), LedgerProbe()
        scores = evaluation.training_metrics(len(self.data.label_names)) \
            if self.cfg.trainer.eval_steps and self.data.task == "cls" else None
        # A method whose adapter changes shape during training (AdaLoRA's rank budget) is driven by peft.
        method_callbacks = [AdaLoraBudget(self.model)] if self.cfg.method.peft_type == "ADALORA" else []
        patience = self.cfg.trainer.early_stopping_patience
        stopping = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
        self.trainer = Trainer(model=self.model, args=self.args, train_dataset=self.tokenized["train"],
                               eval_dataset=self.tokenized["validation"], data_collator=self.collate,
                               compute_metrics=scores,
                               callbacks=[DivergenceGuard(), SpaceGuard(), self.probe, self.timer, *stopping,
                                          *method_callbacks, *extra_callbacks])
        self.trainer.remove_callback(PrinterCallback)  # the record and the summary carry the numbers
        longest = ledger.probe_batch(self.tokenized["train"], self.collate, self.cfg.trainer.batch_size)
        self.probe.bind(self.trainer, longest)
        return self.trainer

    # ---- train ------------------------------------------------------------------------------------

    def train(self) -> None:
        self.untrained_validation_loss = None
        if self.data.task == "lm":
            # What "learned nothing" means for a language model: the validation loss before the first
            # step (in the record's health, judged on validation; W&B's callback would log it as a
            # training point).
            wandb_callback = self.trainer.pop_callback(WandbCallback)
            self.untrained_validation_loss = self.trainer.evaluate(
                self.tokenized["validation"], metric_key_prefix="untrained_validation")["untrained_validation_loss"]
            if wandb_callback is not None:
                self.trainer.add_callback(wandb_callback)
        output_dir = self.args.output_dir
        self.set_aside_partial_checkpoints(output_dir)
        resume = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        # Where this session starts: its time covers only the steps and tokens after it.
        self.resumed_at = TrainerState(global_step=0, num_input_tokens_seen=0)
        if resume:
            self.notes.append(f"resumed from {resume}")
            self.resumed_at = TrainerState.load_from_json(os.path.join(resume, "trainer_state.json"))
        self.train_output = self.trainer.train(resume_from_checkpoint=resume)
        self.ran = distributed.what_ran(self.trainer, self.launched, self.cfg, self.notes)
        self.discard_selection_checkpoints(output_dir)

    def discard_selection_checkpoints(self, output_dir: str) -> None:
        """Early stopping saves a checkpoint at each evaluation to go back to the best one; once the
        best is loaded they are of no use, unless the run asked for checkpoints (trainer.save_steps)."""
        if not self.cfg.trainer.early_stopping_patience or self.cfg.trainer.save_steps or not self.launched.is_main:
            return
        for folder in glob.glob(os.path.join(output_dir, "checkpoint-*")):
            shutil.rmtree(folder, ignore_errors=True)

    def set_aside_partial_checkpoints(self, output_dir: str) -> None:
        """A checkpoint without trainer_state.json (its save was cut short: a full disk, a kill) cannot
        be resumed from; it is renamed aside, not deleted, so that this run starts cleanly."""
        for folder in glob.glob(os.path.join(output_dir, "checkpoint-*")):
            if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "trainer_state.json")):
                aside = os.path.join(output_dir, f"partial-{os.path.basename(folder)}-{utc_now().replace(':', '')}")
                os.rename(folder, aside)
                self.notes.append(f"set aside a partial checkpoint (no trainer_state.json): {aside}")
                log.warning(self.notes[-1])

    # ---- evaluate ---------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        # W&B's callback would log the final passes under train/ (train/validation_loss); the tracker
        # puts them in the summary under validation/ and test/.
        self.trainer.pop_callback(WandbCallback)
        metrics, self.row_outputs = evaluation.evaluate(self.trainer, self.tokenized, self.data, self.tokenizer,
                                                        self.cfg, self.device)
        metrics["train_loss"] = self.whole_run_train_loss()
        losses = [e["loss"] for e in self.trainer.state.log_history if "loss" in e]
        metrics["first_logged_train_loss"] = losses[0] if losses else None
        metrics["last_logged_train_loss"] = losses[-1] if losses else None
        return metrics

    def keep_rows(self) -> dict | None:
        """The per-row outputs beside the record (lab.rows); the record's `rows` field (file, hash, counts)."""
        if not self.launched.is_main:
            return None
        return rows.write_rows(os.path.join(self.cfg.paths.results, self.run_id), self.row_outputs)

    def whole_run_train_loss(self) -> float:
        """The mean train loss over every step of the run, a resumed one included.

        The Trainer's `training_loss` averages only this session's steps. The steps before the
        checkpoint count through their logged losses (each the mean over its logging interval, so the
        sum is exact when the checkpoint falls on a logged step); steps between the last logged one and
        the checkpoint count at the mean of the logged ones.
        """
        session_steps = self.trainer.state.global_step - self.resumed_at.global_step
        before = self.resumed_at.global_step
        if not before:
            return self.train_output.training_loss
        last, total = 0, 0.0
        for entry in self.resumed_at.log_history:
            if "loss" in entry and entry["step"] <= before:
                total += entry["loss"] * (entry["step"] - last)
                last = entry["step"]
        if last < before:
            total += (before - last) * (total / last if last else self.train_output.training_loss)
        return (total + self.train_output.training_loss * session_steps) / (before + session_steps)

    def judge_convergence(self) -> dict:
        """Whether the run trained until its loss stopped falling (lab.convergence's rule)."""
        state = self.trainer.state
        return convergence.judge(state.log_history, "loss", higher_is_better=False,
                                 patience=self.cfg.trainer.early_stopping_patience,
                                 stopped_early=state.global_step < state.max_steps, steps=state.global_step)

    def judge_health(self, metrics: dict) -> dict:
        """`health` (learned / collapsed) and its evidence: lab.health's rules, on the validation split
        (never test: health decides which runs a learning-rate choice may use)."""
        if self.data.task == "cls":
            validation = self.row_outputs[self.row_outputs["split"] == "validation"]
            predicted, labels = validation["pred"].tolist(), validation["gold"].tolist()
            return health.classification(predicted, labels, self.data.splits["train"]["label"], self.final_train_loss())
        return health.language_model(metrics["validation_loss"], self.untrained_validation_loss)

    def final_train_loss(self, window: int = HEALTH_WINDOW) -> float | None:
        """The training loss over the last `window` steps: the mean of the points logged in them (each
        the mean of its own steps), so the health rule sees the same span at any logging cadence."""
        points = [(e["step"], e["loss"]) for e in self.trainer.state.log_history if "loss" in e]
        if not points:
            return None
        last = points[-1][0]
        recent = [loss for step, loss in points if step > last - window]
        return sum(recent) / len(recent)

    # ---- measure ----------------------------------------------------------------------------------

    def measured_ledger(self, optimizer) -> dict:
        """The measured ledger, with the estimate for the measured step beside it."""
        measured = ledger.measured(self.probe, optimizer, self.model, self.device)
        return compare.estimate_steps(measured, self.cfg, self.device, self.model.config)

    def measure(self) -> dict:
        """Parameters, memory, optimizer, checks and timing of the trained job."""
        # Read before the merge check, which builds a second copy of the model that training never holds.
        peak = self.peak.read()
        optimizer = self.trainer.optimizer
        return {
            "params": self.params,
            "memory": {"unit": "bytes", "scope": memory_scope(self.ran), "weights": weight_bytes(self.model),
                       "earlier_jobs_in_process": self.started["earlier_jobs"],
                       "peak": peak, **self.measured_ledger(optimizer)},
            "optimizer": {"requested": choose_optimizer(self.cfg, self.device)[0], "trainer_optim": self.args.optim,
                          **optimizer_info(optimizer)},
            "checks": self.timed_checks(),
            "adapter_bytes_on_disk": self.adapter_bytes(),
            "distributed": self.ran,
            "timing": self.timing(),
            "curve": self.curve(),
            "splits": {name: len(split) for name, split in self.data.splits.items()},
            "label_names": self.data.label_names,
            "precision": "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "fp32",
            "compute_dtype": str(self.dtype).removeprefix("torch."),
        }

    def timed_checks(self) -> dict:
        with self.phase("checks"):
            return self.checks()

    def checks(self) -> dict:
        """The frozen base is bit-identical after training; merged and on-the-fly adapters agree."""
        checks = {"frozen_base_unchanged": None, "merge_max_abs_logit_diff": None}
        if self.frozen_before is None or not self.launched.is_main:
            return checks
        if self.ran["ran"] == "FSDP":
            self.notes.append("checks skipped under FSDP: each process holds only its shard of the base and adapters")
            return checks
        checks["frozen_base_unchanged"] = frozen_digest(self.model) == self.frozen_before
        if self.model.active_peft_config.is_prompt_learning:
            self.notes.append("merge check not run: a prompt-learning adapter's virtual tokens have no weights to merge")
            return checks
        checks["merge_max_abs_logit_diff"] = evaluation.merge_gap(self.model, self.load_base, self.tokenized["test"],
                                                                  self.collate, self.device)
        return checks

    def timing(self) -> dict:
        runtime = self.train_output.metrics["train_runtime"]
        tokens = int(self.trainer.state.num_input_tokens_seen)
        # A resumed run timed only the steps after its checkpoint: its rate counts only their tokens.
        timed_tokens = tokens - int(self.resumed_at.num_input_tokens_seen)
        return {
            "train_seconds": round(runtime, 3),
            "train_steps": self.trainer.state.global_step,
            "timed_steps": self.trainer.state.global_step - self.resumed_at.global_step,
            "resumed_at_step": self.resumed_at.global_step,
            "step_seconds": self.timer.seconds,
            "train_samples_per_second": self.train_output.metrics.get("train_samples_per_second"),
            "train_tokens": tokens,
            "timed_tokens": timed_tokens,
            "train_tokens_per_second": timed_tokens / runtime if runtime else None,
            "tokens_counted": "non-padding input tokens of the training batches (prompt and response), "
                              "summed over all processes",
            "started_at": self.started["at"],
            "finished_at": utc_now(),
            # The machine's load while the job ran: tokens/s from a shared machine are read with it.
            "loadavg_start": self.started["loadavg"],
            "loadavg_end": os.getloadavg(),
        }

    def curve(self) -> list[dict]:
        """The Trainer's logged points during training: step, train loss, learning rate, grad norm,
        and the validation metrics of evaluations inside training."""
        points = []
        for entry in self.trainer.state.log_history:
            if "loss" in entry or any(key.startswith("eval_") for key in entry):
                points.append({k: v for k, v in entry.items() if k not in RUN_TOTALS})
        return points

    def adapter_bytes(self) -> int | None:
        """Bytes of the adapter as peft saves it (safetensors and its config); None for full fine-tuning,
        whose artifact is the whole model (the `weights` bytes)."""
        if self.cfg.method.peft_type is None or not self.launched.is_main or self.ran["ran"] == "FSDP":
            return None
        with tempfile.TemporaryDirectory(prefix="lab-adapter-") as folder:
            self.model.save_pretrained(folder)
            return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))

    @staticmethod
    def status_of(err: BaseException) -> str:
        """The record's status for a job that raised `err`: diverged (NaN/inf loss), oom or failed."""
        if isinstance(err, Diverged):
            return "diverged"
        return "oom" if is_out_of_memory(err) else "failed"

    def provenance(self) -> dict:
        return provenance(self.device)

    def close(self, record: dict) -> dict:
        """Finish the W&B run with the record; returns what the record says about logging."""
        self.tracker.finish(record)
        return self.tracker.info()


def training_arguments(cfg: DictConfig, device: str, rid: str, report_to: list[str],
                       notes: list[str]) -> TrainingArguments:
    t = cfg.trainer
    chosen = precision(cfg, device, notes)
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
        # transformers 5 has no warmup_ratio: a warmup_steps below 1 is the share of the steps, and
        # lab.config holds trainer.warmup_ratio in [0, 1).
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        # null: a ratio of the run's steps (transformers reads a value < 1 so), about 50 points a curve.
        logging_steps=t.logging_steps or AUTO_LOGGING_RATIO,
        logging_nan_inf_filter=False,  # a NaN loss must reach DivergenceGuard, not be averaged away
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps,
        **_checkpoints(cfg),
        save_total_limit=1,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        bf16=chosen == "bf16",
        fp16=chosen == "fp16",
        use_cpu=device == "cpu",
        optim=choose_optimizer(cfg, device, notes)[1],
        report_to=report_to,
        run_name=rid,
        seed=cfg.seed,
        data_seed=cfg.seed,
        include_num_input_tokens_seen="non_padding",
        **distributed.training_arguments(cfg),
        disable_tqdm=not _single_run_on_a_terminal(),
        dataloader_num_workers=0,
    )


def _checkpoints(cfg: DictConfig) -> dict:
    """Saving: every save_steps; with early stopping at every evaluation too, and the best one by the
    validation loss loaded at the end (the loss, not accuracy: it keeps falling while accuracy sits on a
    plateau, and "trained until the loss stopped falling" is the length rule)."""
    t = cfg.trainer
    if not t.early_stopping_patience:
        return {"save_strategy": "steps" if t.save_steps else "no", "save_steps": t.save_steps}
    return {"save_strategy": "steps", "save_steps": t.eval_steps, "load_best_model_at_end": True,
            "metric_for_best_model": "loss"}


def _single_run_on_a_terminal() -> bool:
    """The Trainer's progress bar shows for one `lab-train` run at a terminal; a multirun prints a line
    per job instead (hydra_plugins/lab_sweeps/progress.py), and the benchmark, not a Hydra app, none."""
    return hydra_mode() == RunMode.RUN and sys.stderr.isatty()


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError that says so."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def optimizer_info(optimizer) -> dict:
    """The optimizer that really ran: its class, and for bitsandbytes its state bits and whether any
    state tensor really lives in paged (CUDA unified) memory."""
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


def frozen_digest(model) -> str:
    """A hash over the bytes of every frozen parameter (4-bit packed data included)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()
