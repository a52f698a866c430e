"""One result record per run: `<results>/<run_id>/result.json`, written atomically.

This module owns the record: its run id, its path, writing it (whole, or its essentials on a full
disk), reading it back (one record, or a results folder with its problems named), the statuses it
and a sweep's jobs can have, and its mapping to and from a W&B run's summary (lab.tracking does the
W&B calls, analysis.collect reads W&B runs back through `record_from_summary`).

The run id is a stable hash of what determines the run's outcome (method, rank, model, dataset,
training settings, seed), never of paths, logging or output folders, so a rerun of the same
config finds its record and a sweep can skip finished work.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import statistics
from datetime import datetime, timezone

from omegaconf import DictConfig, OmegaConf

from lab import fingerprint
from lab.paths import atomic_file, slug
from lab.secrets import REDACTED, SECRET_KEY, redact, redact_text

SCHEMA = 1
RECORD_FILE = "result.json"
# A record's status; a sweep's job that left no record is `crashed` (it raised) or `invalid-config`.
STATUSES = ("ok", "failed", "oom", "diverged")
NO_RECORD = ("crashed", "invalid-config")
FAILED = (*STATUSES[1:], *NO_RECORD)
# Trainer settings that change how a run is observed or saved, not what it learns.
NON_SEMANTIC_TRAINER_KEYS = ("logging_steps", "eval_steps", "save_steps", "threads", "eval_batch_size")
# The max_steps every run with trainer.epochs is hashed with: conf/trainer/default.yaml's value when
# epoch runs still hashed the max_steps they ignored (tests/golden_run_ids.json holds one such id).
EPOCH_RUNS_HASHED_MAX_STEPS = 100
# Method keys that describe a method rather than set it: never in the run id.
DESCRIPTIVE_METHOD_KEYS = ("label", "allows_4bit")
# Method keys added after records existed, and the value every run before them had (or None): at that
# value they stay out of the run id (semantic_config), and analysis reads a record without them so.
METHOD_KEYS_BEFORE = {"scaling": "alpha_2r", "use_dora": False, "peft_type": "LORA", "capacity": "r", "peft": {}}


def semantic_config(cfg: DictConfig) -> dict:
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    # With early stopping the evaluations decide the length: eval_steps is then part of the run.
    stops_early = bool(trainer.get("early_stopping_patience"))
    trainer = {k: v for k, v in trainer.items()
               if k not in NON_SEMANTIC_TRAINER_KEYS or (k == "eval_steps" and stops_early)}
    if trainer.get("early_stopping_patience") is None:
        trainer.pop("early_stopping_patience", None)  # added after records existed: their ids hold
    if trainer.get("epochs") is not None:
        # Epochs decide the length, so max_steps must not split one training into several ids; it is
        # hashed as the default those runs were recorded with before, so that their ids hold.
        trainer["max_steps"] = EPOCH_RUNS_HASHED_MAX_STEPS
    method = OmegaConf.to_container(cfg.method, resolve=True)
    # What a method is called in tables, and whether it could sit on a 4-bit base, change nothing it learns.
    for key in DESCRIPTIVE_METHOD_KEYS:
        method.pop(key, None)
    # Keys added after records existed enter the hash only when set away from what runs did before
    # them, so those runs keep their ids (and a rerun still finds their records): full fine-tuning and
    # LoRA were a method without a peft type and LoRA with `rank` as r and no further peft options.
    for key, before in METHOD_KEYS_BEFORE.items():
        if method.get(key) in (before, None):
            method.pop(key, None)
    out = {
        "method": method,
        "rank": cfg.rank,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "dataset": semantic_dataset(cfg),
        "trainer": trainer,
        "seed": cfg.seed,
    }
    distributed = cfg.get("distributed")
    if distributed is not None and distributed.mode != "none":
        # N processes train on N times the batch, and sharding or offloading changes what is measured;
        # single-process runs keep the ids they had before this key existed.
        out["distributed"] = {**OmegaConf.to_container(distributed, resolve=True),
                              "world_size": int(os.environ.get("WORLD_SIZE", 1))}
    return out


def semantic_dataset(cfg: DictConfig) -> dict:
    """The dataset config as the run id hashes it. A local file enters by its bytes (their SHA-256),
    not by its path: an edited file is other data (a new id, so it trains again), and the same file
    reached from another folder or machine is the same data. Ids of every other source are as before."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    if not dataset.get("fold_labels"):
        dataset.pop("fold_labels", None)  # added after records existed: enters the hash only when set
    if dataset.get("source") == "file":
        dataset["content_sha256"] = data_identity(cfg)["sha256"]
        dataset.pop("path", None)
    return dataset


def data_identity(cfg: DictConfig) -> dict | None:
    """The record's `data_identity`: {path, bytes, sha256} of a local data file; None for other sources."""
    if cfg.dataset.get("source") != "file":
        return None
    return fingerprint.identity(cfg.dataset.path or "", OmegaConf.select(cfg, "paths.cache"))


def role(cfg: DictConfig) -> str | None:
    """`tune` for a run at one of its sweep's tuning seeds (sweep.tune_seeds: they choose settings on
    validation and are never reported), `report` for any other seed of such a sweep, else None."""
    tune = OmegaConf.select(cfg, "sweep.tune_seeds")
    if tune is None:
        return None
    return "tune" if int(cfg.seed) in {int(s) for s in tune} else "report"


def run_id(cfg: DictConfig) -> str:
    digest = hashlib.sha256(json.dumps(semantic_config(cfg), sort_keys=True).encode()).hexdigest()[:10]
    rank = "" if cfg.rank is None else f"-r{cfg.rank}"
    return f"{cfg.method.name}{rank}-{slug(cfg.model.name)}-{slug(cfg.dataset.name)}-s{cfg.seed}-{digest}"


def utc_now() -> str:
    """A record's timestamps (timing.started_at, finished_at), and the progress states compared with them."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_path(results_dir: str, rid: str) -> str:
    """`<results>/<rid>/result.json`; refuses any run id that would put it outside `results_dir`."""
    root = os.path.realpath(results_dir)
    folder = os.path.realpath(os.path.join(root, rid))
    if os.path.dirname(folder) != root or os.path.basename(folder) != rid:
        raise ValueError(f"run id {rid!r} is not one folder name inside {results_dir}")
    return os.path.join(results_dir, rid, RECORD_FILE)


@contextlib.contextmanager
def run_lock(record_file: str):
    """Yields True while this process holds the run's lock, False if another process holds it.

    An flock dies with its process, so a run killed with -9 never leaves a stale lock behind.
    """
    os.makedirs(os.path.dirname(record_file), exist_ok=True)
    with open(os.path.join(os.path.dirname(record_file), ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NotARecord(ValueError):
    """A run folder's record is missing, unreadable or no run record; the message says which."""


def load_record(path: str) -> dict:
    """The record at `path`; raises NotARecord (partial, corrupt, or not a run record)."""
    if not os.path.exists(path):
        raise NotARecord(f"partial: no {RECORD_FILE} (killed, crashed hard, or still running)")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise NotARecord(f"corrupt: {type(err).__name__}: {err}") from err
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        status = record.get("status") if isinstance(record, dict) else type(record).__name__
        raise NotARecord(f"not a run record (status {status!r})")
    return record


def read_record(path: str) -> dict | None:
    """The record at `path`, or None if it is missing or unreadable (a corrupt record is rerun)."""
    try:
        return load_record(path)
    except NotARecord:
        return None


def read_results(results_dir: str) -> tuple[list[dict], list[dict]]:
    """(records, problems) of the run folders under `results_dir`; each problem names its path."""
    records, problems = [], []
    if not os.path.isdir(results_dir):
        return records, [{"path": results_dir, "problem": "missing: no such results folder"}]
    for name in sorted(os.listdir(results_dir)):
        folder = os.path.join(results_dir, name)
        if not os.path.isdir(folder) or name.startswith("."):
            continue
        path = os.path.join(folder, RECORD_FILE)
        try:
            record = load_record(path)
            if not record.get("run_id"):
                raise NotARecord(f"not a run record (status {record['status']!r}, no run_id)")
        except NotARecord as err:
            problems.append({"path": path if os.path.exists(path) else folder, "problem": str(err)})
            continue
        record["path"] = path
        records.append(record)
    return records, problems


def write_json_atomic(path: str, payload: dict) -> dict:
    """Readers see all of the record or none of it (lab.paths.atomic_file), and it is on disk (fsync).
    Returns the record as read back from the file: plain JSON types only, so a sweep's launcher that
    unpickles a job's return gets no library object (a transformers enum would import transformers there)."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=str)
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return json.loads(text)


# `key=value` as Hydra writes overrides (overrides.yaml, hydra.yaml's task list and override_dirname).
_OVERRIDE = re.compile(r"(?P<key>[+~]{0,2}[\w.\-/@]+)=(?P<value>[^,]*)")


# What a record cannot lose: the run's coordinates, outcome, metrics and timing (a few KB). On a full
# disk the record is written with these alone (write_record).
ESSENTIAL_FIELDS = ("schema", "run_id", "status", "method", "rank", "model", "dataset", "seed", "role", "health",
                    "error", "metrics", "params", "timing", "notes", "convergence", "data_identity")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RecordNotWritten(OSError):
    """Neither the record nor its essentials could be written: the caller prints the record instead."""


def write_record(path: str, record: dict) -> dict:
    """Write the record; on a full disk write its essentials (ESSENTIAL_FIELDS), marked `truncated`.

    Returns what was written. Raises RecordNotWritten when even that fails, so that the caller can keep
    the record in its output, where a full disk cannot take it away.
    """
    try:
        return write_json_atomic(path, record)
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise RecordNotWritten(err.errno, f"cannot write {path}: {err.strerror}") from err
        reason = err.strerror
    small = {k: record[k] for k in ESSENTIAL_FIELDS if k in record}
    small["truncated"] = f"disk full ({reason}) writing the full record: only {', '.join(small)} were kept"
    try:
        return write_json_atomic(path, small)
    except OSError as err:
        raise RecordNotWritten(err.errno, f"cannot write {path}, not even its essentials: {err.strerror}") from err


def scrub_overrides(text: str) -> str:
    """Redact the value of every `key=value` override whose last key part names a credential, and any
    secret value (lab.secrets) wherever it stands."""
    def by_key(match):
        key = match["key"].rsplit(".", 1)[-1]
        return f"{match['key']}={REDACTED}" if SECRET_KEY.search(key) else match[0]
    return redact_text(_OVERRIDE.sub(by_key, text))


def scrub_hydra(value):
    """scrub_secrets, and the overrides inside strings: for what Hydra writes (.hydra/*.yaml, argv)."""
    value = scrub_secrets(value)
    if isinstance(value, dict):
        return {k: scrub_hydra(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_hydra(v) for v in value]
    return scrub_overrides(value) if isinstance(value, str) else value


def scrub_secrets(value):
    """Drop values whose key names a credential, at any depth, and redact secret values (lab.secrets)
    in every other string."""
    if isinstance(value, dict):
        return {redact(k): (REDACTED if SECRET_KEY.search(str(k)) and v is not None else scrub_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return redact(value)


# ---- the record as a W&B run's summary (lab.tracking logs it; analysis.collect reads it back) -------

# Record fields that go to the summary as they are (nested dicts read as `params.trainable`, ...).
SUMMARY_FIELDS = ("run_id", "status", "error", "method", "rank", "model", "dataset", "seed", "health",
                  "health_detail", "params", "memory", "optimizer", "checks", "timing", "distributed",
                  "adapter_bytes_on_disk", "splits", "label_names", "precision", "compute_dtype", "provenance",
                  "notes", "rows", "role", "convergence")
# Record metrics whose W&B key is not `<split>/<name>`; `train/train_loss` is the Trainer's own name.
METRIC_KEYS = {"train_loss": "train/train_loss", "first_logged_train_loss": "train/first_logged_loss",
               "last_logged_train_loss": "train/last_logged_loss", "generation_samples": "test/generation_samples"}
SPLITS = ("validation", "test")


def metric_key(name: str) -> str:
    """`test_accuracy` -> `test/accuracy`: the record's metric names in W&B's namespaces."""
    if name in METRIC_KEYS:
        return METRIC_KEYS[name]
    for split in SPLITS:
        if name.startswith(split + "_"):
            return f"{split}/{name[len(split) + 1:]}"
    return f"metrics/{name}"


def metric_name(key: str) -> str | None:
    """The inverse of `metric_key`, None for keys that are no record metric (the Trainer's own)."""
    inverse = {v: k for k, v in METRIC_KEYS.items()}
    if key in inverse:
        return inverse[key]
    split, _, name = key.partition("/")
    if split in SPLITS and name:
        return f"{split}_{name}"
    return name if split == "metrics" and name else None


def summary_of(record: dict) -> dict:
    """The W&B summary of a record: its fields, its metrics under their namespaces; the per-step
    seconds as their median (the list stays in result.json); the curve is the history already."""
    summary = {key: record[key] for key in SUMMARY_FIELDS if key in record}
    summary.update({metric_key(k): v for k, v in (record.get("metrics") or {}).items()})
    timing = dict(summary.get("timing") or {})
    steps = timing.pop("step_seconds", None)
    if steps:
        timing["step_seconds_median"] = statistics.median(steps)
    if timing:
        summary["timing"] = timing
    return scrub_secrets(summary)


def record_from_summary(summary: dict) -> dict:
    """The record's fields back from a summary `summary_of` wrote (analysis reads runs this way)."""
    record = {key: summary[key] for key in SUMMARY_FIELDS if key in summary}
    record["metrics"] = {name: value for key, value in summary.items()
                         if (name := metric_name(key)) and isinstance(value, (int, float))}
    return record
