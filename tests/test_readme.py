"""Every command the README shows works: each ```bash block's commands run here, in order, in one
folder (so the report commands find the records the sweeps before them wrote).

How each is made fast (appended overrides, never a changed command):
- `make T`: `make -n T`, a dry run (the target exists and names its steps; the steps are the other
  commands shown, run below);
- `lab-train` (one run): 2 training steps, 32 validation and test rows, no W&B, results in the folder;
- `lab-train --cfg ...`: as shown (it prints the config and runs nothing);
- `lab-train -m` (a sweep): the tiny model, 2 steps (no epochs, no early stopping), seed 0, no
  bracketing rounds, the jobs in one process (basic launcher), no W&B; the own-data sweep reads a
  small `reviews.csv` written here with the columns it names;
- `python -m analysis report`, `lab-plan`: as shown (a report reads records; lab-plan builds models
  on the meta device in seconds).
A command no rule covers fails the test, so a new one is given its rule.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from sweep_helpers import write_reviews_csv

BIN = Path(sys.executable).parent
APPS = {"lab-train": "lab", "lab-plan": "lab.plan"}


def readme_commands() -> list[list[str]]:
    """The commands of the README's bash blocks: continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def fast(words: list[str], work: Path) -> tuple[list[str], Path]:
    """The command as it runs here, and the folder it runs in (see the module docstring)."""
    results = f"paths.results={work / 'results'}"
    if words[0] == "make":
        return ["make", "-n", *words[1:]], ROOT
    if words[0] in APPS:
        app = [str(BIN / words[0])] if (BIN / words[0]).exists() else [sys.executable, "-m", APPS[words[0]]]
        args = words[1:]
        if words[0] == "lab-plan" or "--cfg" in args:
            return app + args, work
        if "-m" in args:
            # The own-data protocol's length rule (epochs, early stopping) and its bracketing rounds off:
            # its grid of learning rates runs at 2 steps like any sweep.
            return app + args + ["model=tiny-bert", "trainer.max_steps=2", "logger=none", results,
                                 "hydra.sweeper.params.seed=0", "hydra/launcher=basic", "trainer.epochs=null",
                                 "trainer.early_stopping_patience=null", "hydra.sweeper.bracket.key=null"], work
        return app + args + ["trainer.max_steps=2", "dataset.sizes.validation=32", "dataset.sizes.test=32",
                             "logger=none", results], work
    if words[:4] == ["python", "-m", "analysis", "report"]:
        return [sys.executable, *words[1:]], work
    raise AssertionError(f"no rule makes this README command fast: {shlex.join(words)} (add one to tests/test_readme.py)")


def test_the_readme_shows_the_workflows():
    shown = [shlex.join(words) for words in readme_commands()]
    for needed in ("make demo", "make test", "lab-train", "lab-train -m +sweep=method_comparison",
                   "lab-train -m +sweep=smoke", "python -m analysis report", "lab-plan"):
        assert any(command.startswith(needed) for command in shown), needed


@pytest.mark.cache
def test_every_readme_command_runs(tmp_path):
    write_reviews_csv(tmp_path / "reviews.csv", rows=120)
    for words in readme_commands():
        command, cwd = fast(words, tmp_path)
        ran = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
        assert ran.returncode == 0, f"{shlex.join(words)}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
        if words[:4] == ["python", "-m", "analysis", "report"]:
            assert "wrote " in ran.stdout and "report.html" in ran.stdout, ran.stdout[-2000:]
    assert (tmp_path / "reports" / "smoke" / "report.html").exists()
    assert (tmp_path / "reports" / "method_comparison-reviews" / "report.html").exists()
    # the one run, the QLoRA, VeRA and DoRA-on-4-bit runs and the sweeps' jobs (3 methods x 3 learning
    # rates own-data, 4 smoke) each left a record
    assert len(list((tmp_path / "results").glob("*/result.json"))) == 17
