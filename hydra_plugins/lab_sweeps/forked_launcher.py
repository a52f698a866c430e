"""A local launcher whose jobs start warm: n jobs at a time, each in its own process, forked from a
server process that imported the training stack once.

The pooled submitit launcher (local_launcher.py) starts every job as a new interpreter (`python -m
submitit.core._submit`), which imports torch, transformers, peft and datasets again: about 4-6 s of
every job on a 2-core machine (docs/benchmarks.md, "Start-up"), more than the rest of a small job's
non-training time. Python's own `multiprocessing` "forkserver" start method is made for this: one
server process imports the modules named in `preload` once, and each job is a fresh `fork` of it.
A job still runs in a process of its own (its peak memory, its exit, its crash are its own) and
starts in milliseconds. The server imports only: it computes nothing and starts no thread pool
before a fork (a forked OpenMP or CUDA state is what makes plain `fork` unsafe for torch).

What submitit gave the pooled launcher is kept: each job's stdout and stderr in files
(`<sweep dir>/.jobs/<job number>.out|.err`), a timeout (`timeout_min`) after which the job's process
is killed, a pickled result, and a job whose process dies without a result (killed, timed out)
comes back as a failed JobReturn, which the sweeper records as `crashed` and goes past.

    lab-train -m +sweep=NAME hydra/launcher=local hydra.launcher.array_parallelism=4
"""

import atexit
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.lab_sweeps.pool import run_pool, slot_count
from lab.paths import atomic_file

log = logging.getLogger(__name__)
# How long a job's process is given to end after SIGTERM at its timeout before it is killed.
TERMINATE_GRACE_SECONDS = 10


@dataclass
class ForkedLocalConf:
    _target_: str = "hydra_plugins.lab_sweeps.forked_launcher.ForkedLocalLauncher"
    # Jobs running at once (each its own process).
    array_parallelism: int = 2
    # A job still running after this many minutes is stopped and recorded as crashed.
    timeout_min: float = 120
    # Modules the server imports once, before it forks the jobs.
    preload: List[str] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/launcher", name="forked_local_pool", node=ForkedLocalConf, provider="lab")


class ForkedLocalLauncher(Launcher):
    def __init__(self, array_parallelism: int = 2, timeout_min: float = 120, preload: Sequence[str] = ()) -> None:
        if float(timeout_min) <= 0:
            raise ValueError(f"hydra.launcher.timeout_min={timeout_min}: minutes, > 0")
        self.array_parallelism = slot_count(array_parallelism)
        self.timeout_s = float(timeout_min) * 60
        self.preload = [str(name) for name in preload]
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        logs = Path(str(self.config.hydra.sweep.dir)) / ".jobs"
        logs.mkdir(parents=True, exist_ok=True)
        log.info("Local sweep output dir : %s (%d job(s) at a time, each forked from a server that imported %s)",
                 self.config.hydra.sweep.dir, self.array_parallelism, ", ".join(self.preload) or "nothing")
        context = job_context(self.preload)
        return run_pool(job_overrides, initial_job_idx, self.array_parallelism,
                        start=lambda overrides, number: RunningJob.start(context, self, overrides, number, logs),
                        ended=lambda job: job.ended(self.timeout_s), result=lambda job, _: job.job_return())

    def run_in_this_process(self, overrides: List[str], number: int, singleton_state: Dict[Any, Any]) -> JobReturn:
        """The job, as Hydra's launchers run one: the sweep's config with the job's overrides."""
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = f"job_id_for_{number}"
            job.num = number
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def job_context(preload: Sequence[str]):
    """The forkserver context, its server to import `preload` when it starts (the first job's start);
    plain `spawn` where the platform has no forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    # torch.cuda.is_available() (bitsandbytes calls it on import) then asks NVML, which leaves no CUDA
    # state behind for a fork to inherit.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


@dataclass
class RunningJob:
    process: Any
    overrides: List[str]
    number: int
    result: Path
    stderr: Path
    began: float
    stopped: Optional[str] = None

    @classmethod
    def start(cls, context, launcher: ForkedLocalLauncher, overrides: List[str], number: int, logs: Path):
        import cloudpickle  # submitit's pickler: the task function is Hydra-wrapped, so plain pickle cannot name it

        paths = {kind: logs / f"{number}.{kind}" for kind in ("out", "err", "pkl")}
        paths["pkl"].unlink(missing_ok=True)  # a rerun's job must not read an earlier run's result
        payload = cloudpickle.dumps((launcher, overrides, number, Singleton.get_state()))
        process = context.Process(target=child_main, args=(payload, str(paths["out"]), str(paths["err"]),
                                                           str(paths["pkl"])), name=f"job-{number}")
        process.start()
        return cls(process, overrides, number, paths["pkl"], paths["err"], time.monotonic())

    def ended(self, timeout_s: float) -> bool:
        """Whether the job's process has ended; one past its timeout is stopped (and so ends)."""
        if not self.process.is_alive():
            self.process.join()
            return True
        if time.monotonic() - self.began > timeout_s:
            self.stopped = f"stopped after its timeout of {timeout_s / 60:g} min (hydra.launcher.timeout_min)"
            self.process.terminate()
            self.process.join(TERMINATE_GRACE_SECONDS)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            return True
        return False

    def job_return(self) -> JobReturn:
        """The job's JobReturn; a job whose process died without one becomes a failed JobReturn."""
        import cloudpickle

        if self.stopped is None and self.result.is_file():
            return cloudpickle.loads(self.result.read_bytes())
        why = self.stopped or f"its process exited with code {self.process.exitcode} without a result"
        log.error("job #%d (%s) ended without a result: %s; its output: %s", self.number,
                  " ".join(self.overrides), why, self.stderr)
        failed = JobReturn(overrides=list(self.overrides), status=JobStatus.FAILED)
        failed.return_value = RuntimeError(f"job #{self.number} {why}; see {self.stderr}")
        return failed


def child_main(payload: bytes, out: str, err: str, result: str) -> None:
    """A job's process: output to its files, run the job, keep its JobReturn, then the exit handlers a
    process runs at a normal exit (a forked process ends with os._exit, which skips them)."""
    import cloudpickle

    for stream, path in ((sys.stdout, out), (sys.stderr, err)):
        stream.flush()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(descriptor, stream.fileno())
        os.close(descriptor)
    launcher, overrides, number, singleton_state = cloudpickle.loads(payload)
    try:
        outcome = launcher.run_in_this_process(overrides, number, singleton_state)
    except BaseException as raised:  # SystemExit included: the job's outcome, a failure the sweeper records
        outcome = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        outcome.return_value = raised if isinstance(raised, Exception) else \
            RuntimeError(f"the job ended with {type(raised).__name__}: {raised}")
    with atomic_file(result) as partial:
        Path(partial).write_bytes(cloudpickle.dumps(outcome))
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
