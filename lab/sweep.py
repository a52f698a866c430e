"""A sweep's own files, in its folder (`hydra.sweep.dir`), and the grid they describe.

- `multirun.yaml`: the sweep's config, saved (redacted) by the `grouped` sweeper before any job runs;
  its `hydra.overrides.task` are the command line's overrides, shared by every job (`saved_overrides`),
  and its sweeper's `params`/`groups` are the grid (`grid_size`).
- `sweep_summary.json`: the job list with run ids and statuses, rewritten after each batch
  (`write_summary`, `read_summary`): the report's `--sweep` selects the sweep's runs by it, and the
  progress lines read its `jobs_total`.
- `expand`: each job's overrides from the shared params, the groups, and the command line.

The sweeper plugin (hydra_plugins/lab_sweeps) writes these files and the analysis reads them; both
import this module, not each other. No torch here: the report and the sweeper's parent process
never load it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lab.record import scrub_hydra, scrub_overrides, write_json_atomic

SUMMARY_FILE = "sweep_summary.json"
MULTIRUN_FILE = "multirun.yaml"


def expand(params: dict[str, Any] | None, groups: list[dict[str, Any]] | None, arguments: list[str],
           config_loader=None) -> list[list[str]]:
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


# ---- multirun.yaml ---------------------------------------------------------------------------------

def save_config(sweep_dir: str, config: Any) -> None:
    """The sweep's config as multirun.yaml, redacted as the jobs' .hydra/*.yaml: a token given as an
    override is not written anywhere."""
    os.makedirs(sweep_dir, exist_ok=True)
    OmegaConf.save(OmegaConf.create(scrub_hydra(OmegaConf.to_container(config, resolve=False))),
                   os.path.join(sweep_dir, MULTIRUN_FILE))


def _saved(sweep_dir: str):
    try:
        return OmegaConf.load(os.path.join(sweep_dir, MULTIRUN_FILE))
    except OSError:
        return None


def saved_overrides(sweep_dir: str) -> list[str] | None:
    """The command line's overrides as the sweeper saved them (redacted), None without multirun.yaml."""
    saved = _saved(sweep_dir)
    task = OmegaConf.select(saved, "hydra.overrides.task") if saved is not None else None
    return None if task is None else [str(o) for o in task]


def grid_size(sweep_dir: str) -> int | None:
    """The sweep's own grid (before any bracketing), from the config it saved; None without it."""
    saved = _saved(sweep_dir)
    sweeper = OmegaConf.select(saved, "hydra.sweeper") if saved is not None else None
    if sweeper is None:
        return None
    groups = OmegaConf.to_container(sweeper.get("groups")) or [{}]
    return len(expand(OmegaConf.to_container(sweeper.get("params")) or {}, groups, []))


# ---- sweep_summary.json ----------------------------------------------------------------------------

def write_summary(sweep_dir: str, outcomes: list[dict], total: int, grid_jobs: int | None = None,
                  unbracketed: list[str] | None = None) -> None:
    counts = dict(Counter(o["status"] for o in outcomes))
    # The jobs' overrides stay real in memory (bracketing rounds reuse them); the file is redacted.
    jobs = [{**o, "overrides": [scrub_overrides(x) for x in o["overrides"]]} for o in outcomes]
    summary = {"jobs_total": total, "grid_jobs": grid_jobs, "counts": counts, "jobs": jobs}
    if unbracketed is not None:
        summary["unbracketed"] = unbracketed
    write_json_atomic(os.path.join(sweep_dir, SUMMARY_FILE), summary)


def summary_path(path: str) -> str:
    """A sweep folder's summary file; a path to the file itself as it is."""
    return os.path.join(path, SUMMARY_FILE) if os.path.isdir(path) else path


def read_summary(path: str) -> dict | None:
    """The summary of a sweep folder (or the file), None while it is missing or half-written."""
    try:
        with open(summary_path(path)) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None
