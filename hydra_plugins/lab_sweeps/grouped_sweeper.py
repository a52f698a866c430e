"""Hydra's basic sweeper over a union of grids, which goes on past failed jobs and sums them up.

A grid is a cartesian product; "full fine-tuning once per seed, plus LoRA at four ranks" is not
one, because full has no rank. `groups` lists grids whose jobs are launched together:

    hydra:
      sweeper:
        params: {seed: "0,1"}                    # shared by every group
        groups:
          - {method: full}
          - {method: lora, rank: "1,4,16,64"}

Values use Hydra's override grammar, as in the basic sweeper. Command-line overrides apply to
every group and replace a group's value for the same key. A job that appears in two groups runs
once. Without `groups` this is the basic sweeper.

The sweeper reads each job's return value (the run's record, or None for an invalid config),
logs a per-status count, and writes `sweep_summary.json` into the sweep directory: the job list
with run ids and statuses, which `analysis.report --sweep` uses to select this sweep's runs.
"""

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from lab.record import write_json_atomic

log = logging.getLogger(__name__)
SUMMARY_FILE = "sweep_summary.json"


@dataclass
class GroupedSweeperConf:
    _target_: str = "hydra_plugins.lab_sweeps.grouped_sweeper.GroupedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    groups: Optional[List[Dict[str, Any]]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="grouped", node=GroupedSweeperConf, provider="lab")


class GroupedSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 groups: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.groups = [dict(g) for g in groups] if groups else [{}]

    def sweep(self, arguments: List[str]) -> List[List[JobReturn]]:
        jobs = expand(self.params, self.groups, arguments, self.hydra_context.config_loader)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        sweep_dir = self.config.hydra.sweep.dir
        os.makedirs(sweep_dir, exist_ok=True)
        OmegaConf.save(self.config, os.path.join(sweep_dir, "multirun.yaml"))
        log.info("sweep: %d jobs in %d group(s) -> %s", len(jobs), len(self.groups), sweep_dir)

        returns, outcomes = [], []
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=len(outcomes))
            returns.append(results)
            outcomes.extend(outcome(overrides, r) for overrides, r in zip(batch, results))
            write_summary(sweep_dir, outcomes, total=len(jobs))
        report(outcomes)
        return returns


def expand(params: Dict[str, Any], groups: List[Dict[str, Any]], arguments: List[str],
           config_loader=None) -> List[List[str]]:
    """Each job's overrides: every group's grid (shared params, then the group's, then the command
    line's), concatenated in order, a job already listed by an earlier group left out."""
    parser = OverridesParser.create(config_loader=config_loader)
    jobs, seen = [], set()
    for group in groups or [{}]:
        merged = {**(params or {}), **group}
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in merged.items()] + list(arguments))
        for job in BasicSweeper.split_arguments(overrides, None)[0]:
            if frozenset(job) not in seen:
                seen.add(frozenset(job))
                jobs.append(job)
    return jobs


def outcome(overrides, result: JobReturn) -> dict:
    """One job's line of the summary; a job that raised (the suite's jobs never should) is `crashed`."""
    entry = {"overrides": list(overrides), "run_id": None, "status": None, "error": None, "record": None}
    try:
        record = result.return_value  # re-raises what the job raised
    except Exception as err:
        entry.update(status="crashed", error=f"{type(err).__name__}: {err}")
        return entry
    if not isinstance(record, dict):
        entry["status"] = "invalid-config"  # the job printed which key and why
        return entry
    entry.update(run_id=record.get("run_id"), status=record.get("status"), error=record.get("error"))
    results_dir = OmegaConf.select(result.cfg, "paths.results") if result.cfg is not None else None
    if results_dir and entry["run_id"]:
        entry["record"] = os.path.abspath(os.path.join(results_dir, entry["run_id"], "result.json"))
    return entry


def write_summary(sweep_dir: str, outcomes: List[dict], total: int) -> None:
    counts = dict(Counter(o["status"] for o in outcomes))
    write_json_atomic(os.path.join(sweep_dir, SUMMARY_FILE), {"jobs_total": total, "counts": counts, "jobs": outcomes})


def report(outcomes: List[dict]) -> None:
    counts = Counter(o["status"] for o in outcomes)
    log.info("sweep done: %d jobs: %s", len(outcomes), ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    for o in outcomes:
        if o["status"] != "ok":
            log.warning("  %s: %s%s", o["status"], " ".join(o["overrides"]), f" ({o['error']})" if o["error"] else "")
