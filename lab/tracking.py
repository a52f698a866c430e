"""Weights & Biases logging that can fail without costing the run its local record.

Each run's W&B run is its result record:
- id: derived from the run id, opened with resume="allow", so a rerun of a killed job continues
  its W&B run instead of adding a second one (`wandb_id`);
- group: the sweep's name, or a stable hash of the sweep's overrides when it has none (`sweep_group`);
- history: the Trainer's curve under `train/` (loss, learning rate, grad norm) and `eval/` (loss,
  accuracy, macro-F1 when `trainer.eval_steps` is set);
- summary: the record's fields (lab.record.summary_of): `test/`, `validation/`, `train/` metrics, params,
  memory, optimizer, checks, health, timing, provenance, notes;
- artifact `result-<id>` (type `result`): the record as `result.json`, credentials redacted, and the
  per-row outputs (`rows.parquet`, lab.rows) with their SHA-256 in the artifact's metadata.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import sys
import tempfile

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lab.config import in_multirun
from lab.record import scrub_overrides, scrub_secrets, summary_of
from lab.sweep import saved_overrides
from lab.secrets import redact_text

log = logging.getLogger(__name__)

# Overrides that say where a sweep writes or logs, not what it runs: they stay out of its group's hash.
NOT_THE_SWEEP = ("paths.", "logger.", "hydra.", "skip_finished", "+paths.", "+logger.")


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


def wandb_id(run_id: str) -> str:
    """The W&B run id of a run id: the same on every rerun. W&B ids take letters, digits, `-` and `_`
    (64 at most here); a longer run id keeps its head and a hash of the whole."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", run_id)
    if len(safe) <= 64:
        return safe
    return f"{safe[:53]}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def sweep_group(cfg: DictConfig) -> str | None:
    """A multirun's W&B group: `sweep.name`, else `sweep-<hash of the command's overrides>` (the same
    for a rerun of the same command, unlike the sweep folder's clock-time name); None for one run."""
    if not in_multirun():
        return None
    name = OmegaConf.select(cfg, "sweep.name")
    if name:
        return str(name)
    hc = HydraConfig.get()
    # The command line's overrides as the sweeper saved them before any job ran (the same for every
    # job); the job's own overrides if that file is missing.
    overrides = saved_overrides(hc.sweep.dir)
    return "sweep-" + _overrides_hash(list(hc.overrides.task) if overrides is None else overrides)


def _overrides_hash(overrides: list[str]) -> str:
    kept = sorted(o for o in overrides if not o.startswith(NOT_THE_SWEEP))
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:8]


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
        self.group = None
        # Where the run keeps its per-row outputs, which the result artifact carries beside the record.
        self.run_dir = os.path.join(cfg.paths.results, run_id)
        if cfg.logger.name != "wandb":
            return
        try:
            self.mode = wandb_mode(cfg.logger.mode)
            rank = "" if cfg.rank is None else f"-r{cfg.rank}"
            run, self.group = wandb_id(run_id), redact_text(str(cfg.logger.group or group or run_id))
            if self.mode == "offline":
                supersede_offline_runs(run)
            import wandb  # a second to import: only a run that logs to W&B needs it

            with redacted_argv():
                self.run = wandb.init(
                    project=cfg.logger.project, entity=cfg.logger.entity, mode=self.mode,
                    name=redact_text(f"{cfg.method.name}{rank}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}"),
                    group=self.group, id=run, resume="allow",
                    tags=[redact_text(str(t)) for t in (cfg.method.name, cfg.model.name, cfg.dataset.name,
                                                        *cfg.logger.tags)],
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

    def finish(self, record: dict) -> None:
        """The record into the summary and as the `result.json` artifact, then close the run."""
        if self.run is None:
            return
        try:
            self.run.summary.update(summary_of(record))
            if record.get("run_id"):
                self.log_record(record)
        except Exception as err:
            self.error = f"wandb summary failed: {type(err).__name__}: {err}"
            log.warning(self.error)
        finally:
            try:
                self.run.finish()
            except Exception as err:
                self.error = f"wandb.finish failed: {type(err).__name__}: {err}"
            self.run = None

    def log_record(self, record: dict) -> None:
        import wandb

        kept_rows = record.get("rows") or {}
        artifact = wandb.Artifact(f"result-{self.run.id}", type="result",
                                  metadata={"run_id": record["run_id"], "status": record.get("status"),
                                            "rows_sha256": kept_rows.get("sha256")})
        with tempfile.TemporaryDirectory(prefix="lab-record-") as folder:
            path = os.path.join(folder, "result.json")
            with open(path, "w") as f:
                json.dump(scrub_secrets(record), f, indent=2, default=str)
            # add_file copies the file into W&B's staging area (policy "mutable"): the folder may go.
            artifact.add_file(path, name="result.json")
            if kept_rows.get("file"):
                artifact.add_file(os.path.join(self.run_dir, kept_rows["file"]), name=kept_rows["file"])
            self.run.log_artifact(artifact)

    def info(self) -> dict:
        return {"logger": "wandb" if self.mode else "none", "mode": self.mode,
                "run_path": self.run_path, "group": self.group,
                "error": self.error}


def supersede_offline_runs(run: str) -> list[str]:
    """Rename earlier offline folders of this W&B id (a killed or retrained attempt) so that
    `wandb sync wandb/offline-run-*` uploads only the latest attempt: one W&B run per run id."""
    import wandb

    wandb_dir = wandb.Settings().wandb_dir
    moved = []
    for folder in sorted(glob.glob(os.path.join(wandb_dir, f"offline-run-*-{glob.escape(run)}"))):
        target = os.path.join(wandb_dir, "superseded-" + os.path.basename(folder))
        with contextlib.suppress(OSError):
            os.replace(folder, target)
            moved.append(target)
    return moved
