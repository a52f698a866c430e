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

`bracket` extends the grid until each cell's chosen value (by lab.selection's rule: best mean
validation score among values none of whose runs failed or collapsed) has a tried value on both
sides: a choice on the grid's edge gets its next neighbour (one grid step further, at the cell's
seeds), round after round, up to `max_rounds`. `confirm_seeds` then runs each cell's chosen value
at more seeds, so the reported test score rests on more runs than the choice did:

    hydra:
      sweeper:
        bracket: {key: method.learning_rate, metric: validation_accuracy, confirm_seeds: "3,4"}

A rerun of the command is resumable as any sweep: finished runs are skipped, and the same rounds
come out of the same records.

The sweeper reads each job's return value (the run's record, or None for an invalid config),
logs a per-status count, and writes `sweep_summary.json` into the sweep directory: the job list
with run ids and statuses (lab.sweep owns these files), which `python -m analysis report --sweep` uses to select this sweep's runs.
"""

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from lab import selection
from lab.record import NO_RECORD, read_record, record_path, scrub_overrides
from lab.sweep import expand, save_config, write_summary

log = logging.getLogger(__name__)


@dataclass
class BracketConf:
    # The swept key to bracket; null: no bracketing.
    key: Optional[str] = None
    metric: str = "validation_accuracy"
    higher_is_better: bool = True
    max_rounds: int = 3
    confirm_seeds: Optional[str] = None


@dataclass
class GroupedSweeperConf:
    _target_: str = "hydra_plugins.lab_sweeps.grouped_sweeper.GroupedSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    groups: Optional[List[Dict[str, Any]]] = None
    bracket: BracketConf = field(default_factory=BracketConf)


ConfigStore.instance().store(group="hydra/sweeper", name="grouped", node=GroupedSweeperConf, provider="lab")


class GroupedSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 groups: Optional[List[Dict[str, Any]]] = None, bracket: Optional[Any] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.groups = [dict(g) for g in groups] if groups else [{}]
        self.bracket = BracketConf(**bracket) if bracket and bracket.get("key") else None
        self.returns: List[List[JobReturn]] = []
        self.outcomes: List[dict] = []
        self.total = 0
        self.grid_jobs = 0

    def sweep(self, arguments: List[str]) -> List[List[JobReturn]]:
        jobs = expand(self.params, self.groups, arguments, self.hydra_context.config_loader)
        self.sweep_dir = self.config.hydra.sweep.dir
        save_config(self.sweep_dir, self.config)
        log.info("sweep: %d jobs in %d group(s) -> %s", len(jobs), len(self.groups), self.sweep_dir)
        self.grid_jobs = len(jobs)
        self.launch_all(jobs)
        if self.bracket:
            self.extend_until_bracketed()
        report(self.outcomes)
        return self.returns

    def launch_all(self, jobs: List[List[str]]) -> None:
        """Launch `jobs` in batches; the summary is rewritten after each batch."""
        self.total += len(jobs)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        self.batch_index = 0
        # The total first: the progress lines (progress.py) read it while the first batch runs.
        write_summary(self.sweep_dir, self.outcomes, total=self.total, grid_jobs=self.grid_jobs)
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=len(self.outcomes))
            self.returns.append(results)
            self.outcomes.extend(outcome(overrides, r) for overrides, r in zip(batch, results))
            write_summary(self.sweep_dir, self.outcomes, total=self.total, grid_jobs=self.grid_jobs)

    def extend_until_bracketed(self) -> None:
        """Rounds of edge neighbours, then the confirming seeds at each cell's chosen value."""
        bracket = self.bracket
        for number in range(1, bracket.max_rounds + 1):
            extra = bracket_jobs(self.outcomes, bracket)
            if not extra:
                break
            log.info("bracket round %d: %d jobs (%s on a grid edge)", number, len(extra), bracket.key)
            self.launch_all(extra)
        confirm = confirm_jobs(self.outcomes, bracket)
        if confirm:
            log.info("confirming the chosen %s at seeds %s: %d jobs", bracket.key, bracket.confirm_seeds, len(confirm))
            self.launch_all(confirm)
        edges = [f"{' '.join(cell)}: {c.chosen} ({c.edge} edge)" for cell, c in choices(self.outcomes, bracket).items()
                 if c.edge]
        write_summary(self.sweep_dir, self.outcomes, total=self.total, grid_jobs=self.grid_jobs, unbracketed=edges)
        for line in edges:
            log.warning("still on a grid edge after %d rounds: %s", bracket.max_rounds, line)


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
        entry["record"] = os.path.abspath(record_path(results_dir, entry["run_id"]))
    return entry


# ---- bracketing ------------------------------------------------------------------------------------

def _split(job: List[str], key: str) -> tuple:
    """(cell, value, seed) of a job's overrides: the cell is every override but the seed and `key`."""
    value = seed = None
    cell = []
    for override in job:
        name, _, text = override.partition("=")
        if name == key:
            value = float(text)
        elif name == "seed":
            seed = int(text)
        else:
            cell.append(override)
    return tuple(sorted(cell)), value, seed


def trials(outcomes: List[dict], bracket: BracketConf) -> Dict[tuple, Dict[float, List[selection.Trial]]]:
    """Each cell's runs by value of the bracketed key, from the records the jobs wrote."""
    cells: Dict[tuple, Dict[float, List[selection.Trial]]] = {}
    for o in outcomes:
        cell, value, seed = _split(o["overrides"], bracket.key)
        record = read_record(o["record"]) if o.get("record") and o["status"] not in NO_RECORD else None
        if value is None or seed is None or record is None:
            continue
        score = (record.get("metrics") or {}).get(bracket.metric)
        learned = record.get("status") == "ok" and record.get("health") != "collapsed"
        runs = cells.setdefault(cell, {}).setdefault(value, [])
        if all(t.seed != seed for t in runs):
            runs.append(selection.Trial(seed, score, learned))
    return cells


def choices(outcomes: List[dict], bracket: BracketConf) -> Dict[tuple, selection.Choice]:
    return {cell: selection.choose(by_value, bracket.higher_is_better)
            for cell, by_value in trials(outcomes, bracket).items()}


def bracket_jobs(outcomes: List[dict], bracket: BracketConf) -> List[List[str]]:
    """The next neighbour, at the cell's base seeds, of every choice on its grid's edge."""
    jobs = []
    for cell, by_value in trials(outcomes, bracket).items():
        choice = selection.choose(by_value, bracket.higher_is_better)
        value = selection.neighbour(choice, selection.spacing(list(by_value)))
        if value is not None and value not in by_value:
            jobs += [[*cell, f"{bracket.key}={value:g}", f"seed={seed}"] for seed in choice.base_seeds]
    return jobs


def confirm_jobs(outcomes: List[dict], bracket: BracketConf) -> List[List[str]]:
    """Each cell's chosen value at the confirming seeds it has not run yet."""
    if not bracket.confirm_seeds:
        return []
    seeds = [int(s) for s in str(bracket.confirm_seeds).split(",")]
    jobs = []
    for cell, by_value in trials(outcomes, bracket).items():
        choice = selection.choose(by_value, bracket.higher_is_better)
        if choice.chosen is None:
            continue
        done = {t.seed for t in by_value[choice.chosen]}
        jobs += [[*cell, f"{bracket.key}={choice.chosen:g}", f"seed={seed}"] for seed in seeds if seed not in done]
    return jobs


def report(outcomes: List[dict]) -> None:
    counts = Counter(o["status"] for o in outcomes)
    log.info("sweep done: %d jobs: %s", len(outcomes), ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    for o in outcomes:
        if o["status"] != "ok":
            overrides = " ".join(map(scrub_overrides, o["overrides"]))
            log.warning("  %s: %s%s", o["status"], overrides, f" ({o['error']})" if o["error"] else "")
