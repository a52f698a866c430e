"""Real sweeps of tiny runs for tests/test_sweeps.py and tests/test_analysis.py.

`tiny_sweep` runs once per test session (cached by the session's temporary folder), so both
files share its records without a conftest fixture.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# Seconds per run on the CPU: a few steps on a few examples. The tables need records, not accuracy.
FAST = ["trainer.max_steps=8", "trainer.logging_steps=4", "trainer.batch_size=16", "dataset.sizes.train=96",
        "dataset.sizes.validation=32", "dataset.sizes.test=32"]

# The smoke sweep at two seeds, plus one job per way a job can fail: a loss that turns NaN
# (diverged), an exception inside training (a scheduler that needs evaluation, given none: transformers refuses it at setup, failed), and an invalid config.
TINY_GROUPS = ('hydra.sweeper.groups=[{method:full},{method:lora,rank:"2,8"},{method:qlora,rank:4},'
               '{method:full,method.learning_rate:1e12,trainer.logging_steps:1,seed:0},'
               '{method:lora,rank:2,trainer.lr_scheduler:reduce_lr_on_plateau,seed:0},'
               '{method:lora,rank:0,seed:0}]')
TINY_OK = 8  # 2 seeds x (full, lora r=2, lora r=8, qlora r=4)
# Quoted: the seeds of the shared params; a bare seed=0,1 would override the failing groups' seed too.
TINY_OVERRIDES = ("hydra.sweeper.params.seed='0,1'", TINY_GROUPS)


def lab_multirun(workdir: Path, results: Path, sweep_dir: Path, *overrides: str, sweep: str = "smoke",
                 **popen) -> subprocess.Popen:
    """`python -m lab -m +sweep=<sweep>` in `workdir`, started (not waited for)."""
    command = [sys.executable, "-m", "lab", "-m", f"+sweep={sweep}", f"paths.results={results}",
               f"hydra.sweep.dir={sweep_dir}", *FAST, *overrides]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def records(results: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(results.glob("*/result.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def summary(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep_summary.json").read_text())


_RUNS: dict = {}


def tiny_sweep(tmp_path_factory) -> dict:
    session = tmp_path_factory.getbasetemp()
    if session not in _RUNS:
        root = tmp_path_factory.mktemp("tiny-sweep")
        results, sweep_dir = root / "results", root / "multirun"
        output = finish(lab_multirun(root, results, sweep_dir, *TINY_OVERRIDES))
        _RUNS[session] = {"root": root, "results": results, "sweep_dir": sweep_dir, "output": output}
    return _RUNS[session]


def write_reviews_csv(path, rows: int, seed: int = 0) -> None:
    """A two-class review file (columns review, sentiment): each class has its own keywords hidden among
    filler words of tiny-bert's vocabulary, so a tiny model can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    lines = ["review,sentiment"]
    for i in range(rows):
        label = i % 2
        words = list(rng.choice(5, size=3) + 5 * label) + list(rng.choice(np.arange(50, 200), size=12))
        lines.append(" ".join(f"w{w}" for w in rng.permutation(words)) + f",{'good' if label else 'bad'}")
    Path(path).write_text("\n".join(lines) + "\n")
