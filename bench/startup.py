"""Start-up: `lab-train` timed from the command, as child processes that print wall-clock stamps.

One process per job against `lab-train -m` with the same jobs in one process (Hydra's basic
launcher), and a probe of how long the interpreter takes to exit after importing the suite's stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from lab.record import read_results

STARTUP_OVERRIDES = ["model=tiny-llama", "dataset=synthetic-lm", "method=lora", "logger=none", "trainer.max_steps=5",
                     "skip_finished=false"]

# Runs lab.train.main as the console script does, and prints wall-clock stamps: interpreter up,
# imports done, run() entered and left (wrapped by name: main() looks `run` up at call time), the
# Trainer's train begin/end and the first step's start and end, and exit. The hook imports
# transformers (to patch Trainer) before lab.train; lab.train imports the rest of the stack (lab.recipe:
# torch, peft, bitsandbytes, datasets) only inside run(), so that import counts in the phase
# "config, data, model, Trainer", not in "imports".
STARTUP_HOOK = r"""
import time
_t = time.time()
import atexit, sys
def _stamp(name, t=None):
    print(f"BENCH {name} {time.time() if t is None else t:.6f}", file=sys.stderr, flush=True)
_stamp("python_up", _t)
atexit.register(_stamp, "exit")
import transformers
from transformers import TrainerCallback

class _Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        _stamp("train_begin")
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 0:
            _stamp("first_step_begin")
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1:
            _stamp("first_step_end")
    def on_train_end(self, args, state, control, **kw):
        _stamp("train_end")

_init = transformers.Trainer.__init__
def _patched(self, *a, **kw):
    _init(self, *a, **kw)
    self.add_callback(_Clock())
transformers.Trainer.__init__ = _patched

import lab.train
_run = lab.train.run
def _timed_run(cfg):
    _stamp("run_begin")
    try:
        return _run(cfg)
    finally:
        _stamp("run_end")
lab.train.run = _timed_run
_stamp("imports_done")
sys.argv = ["lab-train", *sys.argv[1:]]
sys.exit(lab.train.main())
"""


def lab_train(overrides: list[str], workdir: str) -> dict:
    """Run `lab-train <overrides>` under STARTUP_HOOK; its total seconds and its stamps (seconds from the command)."""
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", STARTUP_HOOK, *overrides], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"lab-train {' '.join(overrides)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    events: dict[str, list[float]] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH "):
            _, name, stamp = line.split()
            events.setdefault(name, []).append(float(stamp) - started)
    return {"process_s": ended - started, "events_s": events}


def timeline(events: dict, process_s: float) -> list[dict]:
    """Phases of each job in seconds, from the stamps of one process (one job, or a multirun's jobs)."""
    jobs = []
    for i, run_begin in enumerate(events["run_begin"]):
        e = {k: v[i] for k, v in events.items() if k not in ("python_up", "imports_done", "exit") and i < len(v)}
        last = i == len(events["run_begin"]) - 1
        before = events["run_end"][i - 1] if i else events["imports_done"][0]
        phases = {
            "python start": events["python_up"][0] if i == 0 else None,
            "imports": events["imports_done"][0] - events["python_up"][0] if i == 0 else None,
            "Hydra (compose / launch job)": run_begin - before,
            "config, data, model, Trainer": e["train_begin"] - run_begin,
            "to first step": e["first_step_begin"] - e["train_begin"],
            "first step": e["first_step_end"] - e["first_step_begin"],
            "other steps": e["train_end"] - e["first_step_end"],
            "evaluate, checks, record": e["run_end"] - e["train_end"],
            "exit": (events["exit"][0] if "exit" in events else process_s) - e["run_end"] if last else None,
            # atexit handlers run first; then the interpreter frees modules and joins threads.
            "teardown": process_s - events["exit"][0] if last and "exit" in events else None,
        }
        jobs.append({"phases": phases, "command_to_first_step_s": e["first_step_begin"],
                     "job_s": sum(v for v in phases.values() if v is not None)})
    return jobs


# Imports the suite's stack and exits; with "freeze" (what lab.train registers for every job), the
# objects alive at exit are moved out of the garbage collector's reach first; "plain" unregisters it,
# to tell how much of the exit is the collector's final passes. lab.recipe is named: lab.train imports
# it only when a job runs.
TEARDOWN_PROBE = r"""
import atexit, gc, sys, time
import lab.train, lab.recipe
from transformers import Trainer
import peft, bitsandbytes, datasets
if sys.argv[1] == "plain":
    atexit.unregister(gc.freeze)
atexit.register(lambda: print(f"BENCH exit {time.time():.6f}", file=sys.stderr, flush=True))
print(f"BENCH objects {len(gc.get_objects())}", file=sys.stderr, flush=True)
"""


def teardown_probe(workdir: str) -> dict:
    """Seconds from the exit handlers to the process's end, without and with `gc.freeze()`."""
    out = {}
    for variant in ("plain", "freeze"):
        started = time.time()
        proc = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, variant], cwd=workdir, capture_output=True,
                              text=True, timeout=600)
        ended = time.time()
        stamps = dict(line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("BENCH "))
        out[variant] = {"process_s": ended - started, "after_exit_handlers_s": ended - float(stamps["exit"]),
                        "gc_objects": int(stamps["objects"])}
    return out


def separate_runs(jobs: int, workdir: str, log) -> list[dict]:
    """`jobs` runs (seeds 0..jobs-1), one process each."""
    separate = []
    for seed in range(jobs):
        run = lab_train([*STARTUP_OVERRIDES, f"seed={seed}", f"paths.results={os.path.join(workdir, f'single-{seed}')}",
                         f"hydra.run.dir={os.path.join(workdir, 'hydra', f'single-{seed}')}"], workdir)
        run["jobs"] = timeline(run["events_s"], run["process_s"])
        separate.append(run)
        log(f"  single process seed={seed}: {run['process_s']:.1f} s, first step at "
            f"{run['jobs'][0]['command_to_first_step_s']:.1f} s")
    return separate


def multirun(jobs: int, workdir: str, log) -> dict:
    """The same `jobs` runs as one `lab-train -m` process."""
    multi = lab_train(["-m", *STARTUP_OVERRIDES, "seed=" + ",".join(str(s) for s in range(jobs)),
                       f"paths.results={os.path.join(workdir, 'multi')}",
                       f"hydra.sweep.dir={os.path.join(workdir, 'hydra', 'multi')}"], workdir)
    multi["jobs"] = timeline(multi["events_s"], multi["process_s"])
    log(f"  multirun of {jobs}: {multi['process_s']:.1f} s")
    return multi


# A sweep's job as `make demo` runs it (minilm-l6 on movie-sentences' 200 validation and 500 test rows,
# one thread), 5 steps: what is left of the job is what a sweep pays besides training.
LAUNCHER_OVERRIDES = ["model=minilm-l6", "dataset=movie-sentences", "dataset.sizes.validation=200",
                      "dataset.sizes.test=500", "trainer.threads=1", "trainer.max_steps=5", "logger=none",
                      "skip_finished=false", "method=full,lora,qlora"]
LAUNCHERS = ("local_submitit", "local")


def launcher_runs(workdir: str, log, overrides: list[str] = LAUNCHER_OVERRIDES) -> dict:
    """The same sweep through each local launcher, one job at a time: each job's time split (its
    record's timing.split_seconds) and the sweep's wall time."""
    out = {}
    for launcher in LAUNCHERS:
        results = os.path.join(workdir, f"launcher-{launcher}")
        command = [sys.executable, "-m", "lab", "-m", *overrides, f"hydra/launcher={launcher}",
                   "hydra.launcher.array_parallelism=1", f"paths.results={results}",
                   f"hydra.sweep.dir={os.path.join(workdir, 'hydra', launcher)}"]
        started = time.time()
        proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1800,
                              env=dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
        process_s = time.time() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        records = read_results(results)[0]
        jobs = [{"method": record["method"], **record["timing"]["split_seconds"]} for record in records]
        out[launcher] = {"process_s": process_s, "jobs": sorted(jobs, key=lambda j: j["method"])}
        log(f"  {launcher}: {len(jobs)} jobs in {process_s:.1f} s")
    return out


def measure_startup(jobs: int, workdir: str, log) -> dict:
    """The report's `startup` section."""
    separate = separate_runs(jobs, workdir, log)
    multi = multirun(jobs, workdir, log)
    teardown = teardown_probe(workdir)
    log(f"  exit after imports: {teardown['plain']['after_exit_handlers_s']:.2f} s, "
        f"{teardown['freeze']['after_exit_handlers_s']:.2f} s with gc.freeze()")
    return {"jobs": jobs, "overrides": STARTUP_OVERRIDES, "separate": separate, "multirun": multi,
            "teardown": teardown, "launchers": launcher_runs(workdir, log), "launcher_overrides": LAUNCHER_OVERRIDES}
