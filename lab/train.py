"""`lab-train`: the Hydra app. Validate, lock, skip or run the job (lab.recipe), record, exit.

    lab-train                                   # the embedded default (conf/train.yaml)
    lab-train method=qlora rank=16 model=tiny-llama dataset=synthetic-lm seed=1
    lab-train -m method=lora,qlora rank=1,4,16  # a sweep (Hydra multirun)

A job never raises into Hydra: a failure is recorded (`failed` / `oom` / `diverged`) and the
launcher goes on with the next job. An invalid config fails before any model is built. A single run
exits with EXIT_CODES[status] once its record is written, so a script or a SLURM array can tell a
failure from success; a job of a sweep returns its record instead and the sweep goes on. Every
process of a multi-process run (lab.distributed) whose run fails exits the same way, so that the
launcher stops the others.
"""

from __future__ import annotations

import atexit
import functools
import gc
import glob
import json
import logging
import os
import shutil
import sys
import time
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lab import distributed
from lab import record as rec
from lab.config import ConfigError, check_results_writable, in_multirun, validate
from lab.paths import CONF_DIR
from lab.secrets import RedactingFilter

log = logging.getLogger("lab")
# A job's process exits with about half a million objects the collector tracks (torch, transformers,
# peft), and the interpreter's final collections over them took 1.3 s of every job's exit on the
# 2-core machine, 0.2 s once frozen (docs/benchmarks.md, "Teardown"): the record is written by then,
# but the next job of a sweep waits for this process to end. Registered at import, before any
# library registers its own exit handlers, so it runs after theirs (atexit runs last-in, first-out).
atexit.register(gc.freeze)
# The exit status of `lab-train` for one run (README, "Exit codes"): 0 for ok and for a run skipped
# as finished or held by another worker.
EXIT_CODES = {"failed": 1, "invalid-config": 2, "oom": 3, "diverged": 4, "record-lost": 5}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> dict | None:
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter())  # the lab logger's lines (Hydra's job log, the console)
    redact_hydra_files()
    try:
        record = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if not in_multirun():
            sys.exit(EXIT_CODES["invalid-config"])
        return None  # a sweep goes on with its other jobs
    except RecordLost as err:
        print(f"error: {err}", file=sys.stderr)
        if not in_multirun():
            sys.exit(EXIT_CODES["record-lost"])
        return {"run_id": err.run_id, "status": "record-lost", "error": str(err)}
    code = EXIT_CODES.get(record.get("status"), 0)
    # In a sweep the record goes back to the sweeper, which goes on and names the failed jobs; a
    # multi-process run exits even then, or the other processes would wait for this one forever.
    if code and (not in_multirun() or int(os.environ.get("WORLD_SIZE", 1)) > 1):
        sys.exit(code)
    return record


def redact_hydra_files() -> None:
    """Hydra saved the job's config and overrides (`.hydra/*.yaml`) before calling the app: a token
    given on the command line is redacted there as in the record (lab.record.scrub_hydra)."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return  # called without Hydra (tests, the benchmark): nothing was saved
    if not hc.output_subdir:
        return
    folder = os.path.join(hc.runtime.output_dir, hc.output_subdir)
    for path in glob.glob(os.path.join(folder, "*.yaml")):
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        scrubbed = rec.scrub_hydra(saved)
        if scrubbed != saved:
            OmegaConf.save(OmegaConf.create(scrubbed), path)


def run(cfg: DictConfig) -> dict:
    """Train, evaluate and record one composed config; raises ConfigError for invalid input only."""
    started = time.time()
    cfg = validate(cfg)
    check_results_writable(cfg.paths.results)
    launched = distributed.launch(cfg)
    # torch, transformers and peft take seconds to import: a config error and --help answer before them.
    from lab import recipe, tracking

    device = recipe.resolve_device(cfg.device)
    distributed.init(launched, device, cfg.distributed.backend)
    rid = rec.run_id(cfg)
    path = rec.record_path(cfg.paths.results, rid)
    new_job = functools.partial(recipe.FineTune, cfg, device, rid, launched)
    if not launched.is_main:
        return run_on_worker(new_job, launched, rid, path, started)
    return run_on_main(new_job, launched, cfg.skip_finished, rid, path, started, group=tracking.sweep_group(cfg))


def run_on_worker(new_job, launched, rid: str, path: str, started: float) -> dict:
    """A distributed run's other processes train only when the main process decided to."""
    decision = distributed.share(launched)
    if decision != "train":
        return {"run_id": rid, "status": decision}
    return run_and_record(new_job(), path, started)


def run_on_main(new_job, launched, skip_finished: bool, rid: str, path: str, started: float,
                group: str | None) -> dict:
    """Under the run's lock: skip it (another worker has it, or it finished earlier) or train it."""
    # One worker per run id: two launcher workers given the same config never both train it.
    with rec.run_lock(path) as held:
        existing = rec.read_record(path) if held else None
        decision = skip_or_train(held, existing, skip_finished)
        distributed.share(launched, decision)
        if decision != "train":
            return skipped(decision, rid, path, existing)
        if existing is None and os.path.exists(path):
            log.warning("unreadable record at %s (corrupt or from an older version): rerunning", path)
        try:
            return run_and_record(new_job(group=group), path, started)
        except ConfigError:
            remove_if_unused(os.path.dirname(path))
            raise


def skip_or_train(held: bool, existing: dict | None, skip_finished: bool) -> str:
    if not held:
        return "running-elsewhere"
    if existing and existing["status"] == "ok" and skip_finished:
        return "finished-earlier"
    return "train"


def skipped(decision: str, rid: str, path: str, existing: dict | None) -> dict:
    if decision == "running-elsewhere":
        print(f"[lab] {rid}: being run by another worker, skipped")
        return {"run_id": rid, "status": "running-elsewhere"}
    print(f"[lab] {rid}: finished earlier (ok), skipped; {path}")
    return existing


def remove_if_unused(folder: str) -> None:
    """Remove a run folder that holds only its lock (and empty folders): an input error found after
    the lock (a CSV's labels, a missing file) trained nothing, and the analysis would call the empty
    folder a killed run."""
    for root, _, files in os.walk(folder):
        if any(name != ".lock" or root != folder for name in files):
            return
    shutil.rmtree(folder, ignore_errors=True)


def run_and_record(job, path: str, started: float) -> dict:
    """Run the job; map a failure to its status; rank 0 writes the record (and the traceback)."""
    cfg = job.cfg
    record = {"schema": rec.SCHEMA, "run_id": job.run_id, "status": None, "method": cfg.method.name,
              "rank": cfg.rank, "model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed,
              "role": rec.role(cfg), "data_identity": job.data_identity, "notes": job.notes}
    failure = None
    try:
        record.update(job.run())
        record["status"] = "ok"
    except ConfigError:  # found once the model's structure is known (e.g. a target it lacks)
        job.close({"status": "invalid-config"})
        raise
    except Exception as err:
        status = job.status_of(err)
        if status == "diverged":  # a NaN loss: the message says where; no traceback to keep
            record.update(status=status, error=str(err))
        else:
            record.update(status=status, error=f"{type(err).__name__}: {err}")
            failure = traceback.format_exc()
            log.error("run %s %s: %s", job.run_id, status, record["error"])
    if not job.launched.is_main:
        job.close({})
        if record["status"] != "ok":
            wait_for_record(path, started)
        return record
    now = time.time()
    record["timing"] = {**record.get("timing", {}), "wall_seconds": round(now - started, 3),
                        **time_split(job, started, now)}
    record["provenance"] = job.provenance()
    record["config"] = job.config
    # Secret values (lab.secrets) out of every field (a name, an error) before W&B or the disk see it.
    record = rec.scrub_secrets(record)
    record["logging"] = rec.scrub_secrets(job.close(record))  # the whole record goes to W&B: summary and result.json
    # The record first: on a full disk, it is what a run that trained must not lose.
    try:
        written = rec.write_record(path, record)
    except rec.RecordNotWritten as err:
        print(json.dumps(record, default=str))
        raise RecordLost(job.run_id, f"{err.strerror}; the record went to standard output as one JSON line") from None
    try:
        write_traceback(os.path.join(os.path.dirname(path), "traceback.txt"), failure)
    except OSError as err:
        log.warning("traceback of %s not kept (%s): %s", job.run_id, err.strerror, failure)
    print(summary(written, path))
    return written


# A failed process of a multi-process run exits 1, and torchrun then stops the others: a process that
# is not rank 0 first gives rank 0 up to this long to write the run's record (else, on a loaded
# machine, rank 0 was stopped before its record was on disk). Bounded: rank 0 may be stuck in a collective.
RECORD_WAIT_SECONDS = 60.0


def wait_for_record(path: str, started: float, timeout: float = RECORD_WAIT_SECONDS) -> None:
    """Until a record at `path` written since `started` exists, or `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getmtime(path) >= started:
            return
        time.sleep(0.1)


def time_split(job, started: float, now: float) -> dict:
    """timing.split_seconds: where the job's wall time went, its startup counted from the process's
    start for the process's first job (a fresh process per job under local, local_submitit and SLURM)."""
    first = job.started["earlier_jobs"] == 0
    startup_from = process_started() if first else None
    return {"split_seconds": job.time_split(startup_from or started, now),
            "startup_from": "process start" if startup_from else "job start (a process that ran earlier jobs)"}


def process_started() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # no psutil, or a platform that hides it: the startup then counts from run()
        return None


class RecordLost(Exception):
    """A run's record could not be written anywhere on disk (it went to the output instead)."""

    def __init__(self, run_id: str, message: str):
        super().__init__(message)
        self.run_id = run_id


def write_traceback(path: str, failure: str | None) -> None:
    """Keep the traceback of a failed run beside its record; remove one an earlier attempt left."""
    if failure:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(failure)
    elif os.path.exists(path):
        os.unlink(path)


def summary(record: dict, path: str) -> str:
    p, m, t = record.get("params", {}), record.get("metrics", {}), record.get("timing", {})
    peak = record.get("memory", {}).get("peak", {})
    peak_bytes = peak.get("peak_rss_above_baseline", peak.get("peak_allocated_above_baseline"))
    weights = record.get("memory", {}).get("weights", {})
    health = f", {record['health']}" if record.get("health") else ""
    lines = [
        f"== {record['run_id']}  [{record['status']}{health}]",
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
    for reason in (record.get("health_detail") or {}).get("reasons", []):
        lines.append(f"collapsed: {reason}")
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    lines.append(f"record: {path}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
