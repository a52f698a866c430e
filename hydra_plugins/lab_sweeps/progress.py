"""A multirun's progress on the terminal, whichever launcher runs its jobs.

    [sweep 3/14 done, 2 running, 0 failed, 9 left | 4m10s, ETA 9m05s] finished method=lora rank=4 seed=0: test_accuracy 0.8120 in 52 s

Hydra calls a Callback's `on_job_start` / `on_job_end` where the job runs: in the sweep's own process
(basic launcher), a joblib worker (`parallel`), a forked process (`local`) or a submitit subprocess
(`local_submitit`, `slurm`),
whose output the terminal may never see. So each job only writes its state to
`<sweep dir>/.progress/<job number>.json`, and a thread of the sweep's process (started by
`on_multirun_start`) prints one line per change it finds there. The total comes from the sweeper's
`sweep_summary.json` (`jobs_total`); without it the line says how many are known.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lab.record import FAILED, scrub_hydra, scrub_overrides, utc_now, write_json_atomic
from lab.sweep import read_summary, saved_overrides

FOLDER = ".progress"
HEADLINE = ("test_accuracy", "test_loss")
# The watcher of this process, kept off the callback: Hydra pickles callbacks into joblib and submitit workers.
_WATCHERS: dict[int, "Watcher"] = {}


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = os.path.join(config.hydra.sweep.dir, FOLDER)
        shutil.rmtree(folder, ignore_errors=True)  # a rerun into the same sweep folder starts afresh
        os.makedirs(folder, exist_ok=True)
        _WATCHERS[id(self)] = Watcher(config.hydra.sweep.dir)
        _WATCHERS[id(self)].start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        watcher = _WATCHERS.pop(id(self), None)
        if watcher is not None:
            watcher.stop()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _multirun(config):
            write_state(config, {"state": "started", "at": time.time(), "started_at": utc_now()})

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if _multirun(config):
            path = _state_path(config)
            started = _read(path) or {}
            state = job_state(job_return, started.get("started_at"))
            write_state(config, {**started, **state, "seconds": time.time() - started.get("at", time.time())})


def _multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") in (RunMode.MULTIRUN, "MULTIRUN")


def _state_path(config: DictConfig) -> str:
    return os.path.join(config.hydra.sweep.dir, FOLDER, f"{config.hydra.job.num}.json")


def write_state(config: DictConfig, state: dict) -> None:
    # A token given as an override stays out of the state file, as out of every file the suite writes.
    write_json_atomic(_state_path(config), scrub_hydra({"num": int(config.hydra.job.num), "job": job_name(config),
                                                        **state}))


def job_name(config: DictConfig) -> str:
    """The job's own overrides: those every job shares (the command line's, as the sweeper saved it
    in multirun.yaml) left out."""
    shared = {o.replace(" ", "") for o in saved_overrides(config.hydra.sweep.dir) or []}  # Hydra gives a job `{a:1,b:2}` for a typed `{a: 1, b: 2}`
    # multirun.yaml holds the overrides redacted: compare them so.
    own = [o for o in config.hydra.overrides.task
           if scrub_overrides(o).replace(" ", "") not in shared and not o.startswith(("paths.", "hydra."))]
    return " ".join(own) or f"job {config.hydra.job.num}"


def job_state(job_return: JobReturn, started_at: Optional[str]) -> dict:
    """finished (with the headline metric), skipped (an ok record from an earlier sweep) or failed (one line)."""
    if job_return.status == JobStatus.FAILED:
        return {"state": "failed", "status": "crashed", "error": _first_line(repr(job_return._return_value))}
    record = job_return.return_value
    if not isinstance(record, dict):
        return {"state": "failed", "status": "invalid-config", "error": "invalid config (the job printed why)"}
    status = record.get("status")
    if status in FAILED:
        return {"state": "failed", "status": status, "error": _first_line(record.get("error") or status)}
    finished_at = (record.get("timing") or {}).get("finished_at")
    if status != "ok" or (finished_at and started_at and finished_at < started_at):
        return {"state": "skipped", "status": status}
    metrics = record.get("metrics") or {}
    headline = next(((k, metrics[k]) for k in HEADLINE if isinstance(metrics.get(k), (int, float))), None)
    return {"state": "finished", "status": status, "headline": headline, "health": record.get("health")}


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0][:160] if str(text).strip() else ""


def _read(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Watcher(threading.Thread):
    """Polls the progress folder and prints a line per job state change, with the totals."""

    def __init__(self, sweep_dir: str, every: float = 1.0):
        super().__init__(daemon=True, name="sweep-progress")
        self.sweep_dir, self.every = sweep_dir, every
        self.seen: dict[int, str] = {}
        self.states: dict[int, dict] = {}
        self.began = time.time()
        self.most_running = 1
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.poll()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.poll()  # the last jobs' ends, written just before the sweep ended

    def poll(self) -> None:
        folder = os.path.join(self.sweep_dir, FOLDER)
        names = sorted(os.listdir(folder), key=lambda n: (len(n), n)) if os.path.isdir(folder) else []
        for name in names:
            state = _read(os.path.join(folder, name)) if name.endswith(".json") else None
            if state is None or self.seen.get(state["num"]) == state["state"]:
                continue
            self.seen[state["num"]] = state["state"]
            self.states[state["num"]] = state
            print(self.line(state), flush=True)

    def line(self, state: dict) -> str:
        return f"[sweep {self.totals()}] {describe(state)}"

    def totals(self) -> str:
        states = list(self.states.values())
        running = [s for s in states if s["state"] == "started"]
        ended = [s for s in states if s["state"] != "started"]
        failed = sum(s["state"] == "failed" for s in states)
        self.most_running = max(self.most_running, len(running))
        total = (read_summary(self.sweep_dir) or {}).get("jobs_total")
        left = max(total - len(states), 0) if total else None
        elapsed = time.time() - self.began
        text = f"{len(ended)}/{total if total else '?'} done, {len(running)} running, {failed} failed, " \
               f"{left if left is not None else '?'} left | {clock(elapsed)}"
        eta = self.eta(running, left)
        return text + (f", ETA {clock(eta)}" if eta is not None else "")

    def eta(self, running: list[dict], left: Optional[int]) -> Optional[float]:
        """The work left (jobs not started at the mean time of the trained ones, the running ones' rest)
        shared among as many jobs as have run at once."""
        trained = [s["seconds"] for s in self.states.values() if s["state"] == "finished"]
        if not trained or left is None:
            return None
        mean, now = statistics.mean(trained), time.time()
        rest = sum(max(mean - (now - s["at"]), 0) for s in running)
        return (left * mean + rest) / self.most_running


def describe(state: dict) -> str:
    job = state["job"]
    if state["state"] == "started":
        return f"started {job}"
    seconds = f"in {state.get('seconds', 0):.0f} s"
    if state["state"] == "failed":
        return f"FAILED {job}: {state['status']}: {state.get('error')} ({seconds})"
    if state["state"] == "skipped":
        return f"skipped {job}: finished earlier ({state['status']})"
    headline = state.get("headline")
    score = f": {headline[0]} {headline[1]:.4f}" if headline else ""
    health = " (collapsed)" if state.get("health") == "collapsed" else ""
    return f"finished {job}{score}{health} {seconds}"


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"
