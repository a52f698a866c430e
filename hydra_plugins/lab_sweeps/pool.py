"""The pool both local launchers keep: `slots` jobs running, the next started as soon as one ends."""

import logging
import time
from typing import Any, Callable, Dict, List, Sequence

from hydra.core.utils import JobReturn, filter_overrides

log = logging.getLogger(__name__)
# How often the pool looks for a finished job: small against a job (tens of seconds), and cheap.
POLL_SECONDS = 0.2


def slot_count(array_parallelism) -> int:
    """hydra.launcher.array_parallelism as the pool's bound: a whole number >= 1."""
    if int(array_parallelism) < 1:
        raise ValueError(f"hydra.launcher.array_parallelism={array_parallelism}: a whole number >= 1")
    return int(array_parallelism)


def run_pool(job_overrides: Sequence[Sequence[str]], initial_job_idx: int, slots: int,
             start: Callable[[List[str], int], Any], ended: Callable[[Any], bool],
             result: Callable[[Any, List[str]], JobReturn]) -> List[JobReturn]:
    """Each job's JobReturn, in the order given: `start(overrides, number)` starts a job and returns its
    handle, `ended(handle)` says whether it has ended, `result(handle, overrides)` is its JobReturn."""
    waiting = list(enumerate(job_overrides))
    running: Dict[int, Any] = {}
    results: List[JobReturn] = [None] * len(job_overrides)  # type: ignore[list-item]
    while waiting or running:
        while waiting and len(running) < slots:
            index, overrides = waiting.pop(0)
            number = initial_job_idx + index
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
            running[index] = start(list(overrides), number)
        finished = [index for index, job in running.items() if ended(job)]
        if not finished:
            time.sleep(POLL_SECONDS)
        for index in finished:
            results[index] = result(running.pop(index), list(job_overrides[index]))
    return results
