"""The Trainer callbacks every run (and the benchmark, which times the run's own Trainer) carries."""

from __future__ import annotations

import errno
import glob
import math
import os
import shutil
import time

import torch
from transformers import TrainerCallback

from lab.config import MIN_FREE_BYTES


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the run is recorded as `diverged`."""


class DivergenceGuard(TrainerCallback):
    """Stops a run whose logged training loss is NaN or infinite (the Trainer's NaN filter is off)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise Diverged(f"training loss {loss} at step {state.global_step}")


class StepTimer(TrainerCallback):
    """Each optimizer step's wall time (seconds); on CUDA it waits for the step's kernels, so a step
    is not timed as the moment its launches were queued."""

    def __init__(self, device: str):
        self.device = device
        self.seconds: list[float] = []
        self.last = None

    def _now(self) -> float:
        if self.device == "cuda":
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


class SpaceGuard(TrainerCallback):
    """Before each checkpoint, checks the disk has room for it, so a full disk stops the run with a
    clear error (and its record) instead of leaving half a checkpoint behind."""

    # Beyond the checkpoint: the record, the logs, the rename of the next checkpoint (the margin the
    # config check asks of paths.results before a run starts).
    MARGIN = MIN_FREE_BYTES

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not control.should_save:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        need = self.checkpoint_bytes(args.output_dir, model, optimizer) + self.MARGIN
        free = self.free_bytes(args.output_dir)
        if free < need:
            raise OSError(errno.ENOSPC, f"no room for checkpoint-{state.global_step} in {args.output_dir}: about "
                          f"{need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free (free some space, or "
                          "trainer.save_steps=null saves none)")

    @staticmethod
    def free_bytes(folder: str) -> int:
        return shutil.disk_usage(folder).free

    @staticmethod
    def checkpoint_bytes(output_dir: str, model, optimizer) -> int:
        """The last checkpoint's size, or before the first: the saved weights and the optimizer state."""
        previous = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*")), key=os.path.getmtime)
        if previous:
            return sum(os.path.getsize(os.path.join(root, name))
                       for root, _, names in os.walk(previous[-1]) for name in names)
        # A peft model saves its adapter alone; full fine-tuning the whole model.
        adapter_only = hasattr(model, "peft_config")
        weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not adapter_only)
        state = sum(t.numel() * t.element_size() for s in (optimizer.state.values() if optimizer else ())
                    for t in s.values() if torch.is_tensor(t))
        trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
        return weights + max(state, 2 * trainable)  # AdamW's two fp32 moments, before its first step too


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA's rank budget schedule through peft's own `update_and_allocate`, which scores each
    singular value's importance from its gradient: so it runs after the optimizer step and before the
    Trainer zeroes the gradients (on_optimizer_step), with the step count from before its increment,
    as peft's AdaLoRA example calls it."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.model.base_model.update_and_allocate(state.global_step)
        self.calls += 1
