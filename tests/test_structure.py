"""The package's shape holds: imports flow one way (import-linter), and a wheel install finds its configs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent
PACKAGES = ("lab", "analysis", "bench", "hydra_plugins")
# Installed into the package by pyproject.toml's package-dir mapping.
CONFIG_FOLDERS = ("conf", "sweeps")


def _copy_sources(target: Path) -> Path:
    """The files a build needs, without caches, virtualenvs or results."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    for folder in PACKAGES + CONFIG_FOLDERS:
        shutil.copytree(ROOT / folder, target / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(BIN / "lint-imports")], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    copy = _copy_sources(tmp_path / "src")
    config = copy / "lab" / "config.py"
    # The config layer reaching up into the recipe: the kind of cycle the contracts exist to stop.
    config.write_text(config.read_text() + "\nfrom lab import recipe  # noqa: E402\n")
    proc = _lint_imports(copy)
    assert proc.returncode != 0
    assert "lab is layered" in proc.stdout and "BROKEN" in proc.stdout
    assert "lab.config -> lab.recipe" in proc.stdout


def test_a_wheel_install_finds_its_configs_and_runs(tmp_path):
    source = _copy_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("lab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    # The dependencies come from this environment's site-packages (a path, so its editable `lab`
    # finder is not activated); `lab` itself only from the wheel.
    site = next(venv.glob("lib/python*/site-packages"))
    site.joinpath("deps.pth").write_text(next(Path(sys.prefix).glob("lib/python*/site-packages")).as_posix())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # Only the wheel: a PYTHONPATH naming a checkout (as a worktree's test run sets) would shadow it.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "WANDB_MODE": "offline"}

    def lab_train(*args):
        return subprocess.run([str(venv / "bin" / "lab-train"), *args], cwd=work, capture_output=True, text=True,
                              timeout=600, env=env)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lab; print(lab.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True, env=env).stdout
    assert where.startswith(str(venv)), where
    shown = lab_train("--cfg", "job", "+sweep=smoke")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "name: smoke" in shown.stdout and "method:" in shown.stdout
    ran = lab_train("model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=3", "logger=none",
                    f"paths.results={work / 'results'}")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "  [ok" in ran.stdout
    assert len(list((work / "results").glob("*/result.json"))) == 1
    # A sweep from sweeps/ (shipped in lab/conf/sweep), then its report: the report opens the published
    # accuracies (analysis/reference) from the wheel too.
    swept = lab_train("-m", "+sweep=smoke", "trainer.max_steps=3", f"paths.results={work / 'results'}")
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    summary = json.loads((work / "multirun" / "smoke" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 4}, summary
    report = subprocess.run([str(venv / "bin" / "python"), "-m", "analysis", "report", "--results", "results",
                             "--sweep", "multirun/smoke", "--out", "report", "--wandb", "no"], cwd=work,
                            capture_output=True, text=True, timeout=600, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    html = (work / "report" / "report.html").read_text()
    assert "Report: smoke" in html and "Published figures beside ours" in html


def test_a_job_process_freezes_the_collector_at_exit():
    """lab.train registers gc.freeze before any library's exit handler: a handler registered before it
    runs after it and sees the objects frozen."""
    probe = ("import atexit, gc; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
             "import lab.train")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "frozen True", out.stderr[-2000:]
