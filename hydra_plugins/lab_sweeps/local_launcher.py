"""submitit's local launcher with a bound on the jobs running at once: n jobs run, and the next one
starts as soon as one ends.

Hydra's `submitit_local` launcher hands a batch to submitit's LocalExecutor, which starts every job
of the batch at once (LocalExecutor has no `array_parallelism`; only SLURM honours it), so a small
machine had to cap the batch (`max_batch_size=2`), and each batch waited for its slowest job while a
core idled. The alternatives keep a job's process but not its memory: Hydra's joblib launcher
(`parallel`) runs jobs in reused loky workers, whose peak resident set carries earlier jobs' pages.
So this launcher keeps submitit (a fresh `python -m submitit.core._submit` process per job, its
timeout, its pickled result, its logs in `<sweep dir>/.submitit/<job id>/`) and only replaces
`map_array` (submit all) with a pool: `executor.submit` one job per free slot, poll `job.done()`.

    lab-train -m +sweep=NAME hydra/launcher=local_submitit hydra.launcher.array_parallelism=4

`array_parallelism` is the SLURM launcher's name for the same bound. A job whose process dies
(killed, timed out) is returned as a failed JobReturn, which the sweeper records as `crashed` and
goes past, as it does a job that raised.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from hydra_plugins.lab_sweeps.pool import run_pool, slot_count

log = logging.getLogger(__name__)


@dataclass
class PooledLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.lab_sweeps.local_launcher.PooledLocalLauncher"
    # Jobs running at once (each its own process).
    array_parallelism: int = 2


ConfigStore.instance().store(group="hydra/launcher", name="submitit_local_pool", node=PooledLocalConf,
                             provider="lab")


class PooledLocalLauncher(LocalLauncher):
    def __init__(self, array_parallelism: int = 2, **params: Any) -> None:
        super().__init__(**params)
        self.array_parallelism = slot_count(array_parallelism)

    def executor(self):
        """The LocalExecutor as Hydra's submitit launcher configures it (folder, timeout, GPUs)."""
        import submitit  # lazy, as in Hydra's launcher: plugin discovery stays fast

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init["local_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster="local", **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"local_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        executor = self.executor()
        log.info("Submitit 'local' sweep output dir : %s (%d job(s) at a time)", self.config.hydra.sweep.dir,
                 self.array_parallelism)
        return run_pool(job_overrides, initial_job_idx, self.array_parallelism,
                        start=lambda overrides, number: executor.submit(self, overrides, "hydra.sweep.dir", number,
                                                                        f"job_id_for_{number}", Singleton.get_state()),
                        ended=lambda job: job.done(), result=job_return)

def job_return(job, overrides: Sequence[str]) -> JobReturn:
    """The job's JobReturn; a job whose process died without one becomes a failed JobReturn."""
    try:
        return job.results()[0]
    except Exception as err:  # submitit's UncompletedJobError / FailedJobError: the process ended badly
        log.error("job %s (%s) ended without a result: %s", job.job_id, " ".join(overrides),
                  str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        failed.return_value = err
        return failed
