"""The Trainer callbacks every run (and the benchmark, which times the run's own Trainer) carries."""

from __future__ import annotations

import math
import time

import torch
from transformers import TrainerCallback


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
