"""Weights & Biases logging that can fail without costing the run its local record."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import wandb
from omegaconf import DictConfig

from lab.record import scrub_overrides

log = logging.getLogger(__name__)


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return "online"
    netrc = os.path.expanduser("~/.netrc")
    if os.path.exists(netrc):
        with open(netrc) as f:
            if "api.wandb.ai" in f.read():
                return "online"
    return "offline"


@contextlib.contextmanager
def redacted_argv():
    """W&B records the command line (its run's `args`, uploaded on sync): it reads sys.argv during
    init, so a token given as an override is redacted there for that while."""
    saved = sys.argv
    sys.argv = [scrub_overrides(arg) for arg in saved]
    try:
        yield
    finally:
        sys.argv = saved


class Tracker:
    """Opens one W&B run per job and always closes it, so multirun jobs never merge."""

    def __init__(self, cfg: DictConfig, run_id: str, config: dict, group: str | None):
        self.run = None
        self.error = None
        self.mode = None
        self.run_path = None
        if cfg.logger.name != "wandb":
            return
        try:
            self.mode = wandb_mode(cfg.logger.mode)
            rank = "" if cfg.rank is None else f"-r{cfg.rank}"
            with redacted_argv():
                self.run = wandb.init(
                    project=cfg.logger.project, entity=cfg.logger.entity, mode=self.mode,
                    name=f"{cfg.method.name}{rank}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}",
                    group=cfg.logger.group or group or run_id, id=None,
                    tags=[str(cfg.method.name), cfg.model.name, cfg.dataset.name, *cfg.logger.tags],
                    config=config, reinit="finish_previous",
                    settings=wandb.Settings(silent=True, init_timeout=cfg.logger.init_timeout),
                )
            self.run_path = self.run.path
        except Exception as err:  # W&B down, bad key, no network: keep training, note it.
            self.error = f"wandb.init failed: {type(err).__name__}: {err}"
            log.warning(self.error)

    @property
    def report_to(self) -> list[str]:
        return ["wandb"] if self.run is not None else []

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(summary)
        except Exception as err:
            self.error = f"wandb summary failed: {type(err).__name__}: {err}"
            log.warning(self.error)
        finally:
            try:
                self.run.finish()
            except Exception as err:
                self.error = f"wandb.finish failed: {type(err).__name__}: {err}"
            self.run = None

    def info(self) -> dict:
        return {"logger": "wandb" if self.mode else "none", "mode": self.mode,
                "run_path": self.run_path,
                "error": self.error}
