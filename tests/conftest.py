import os
import sys
from pathlib import Path

import pytest

from lab.config import compose

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist (`make test`: a worker per core) each worker, and every job it starts, computes on
# one thread: two workers of two threads on two cores spend their time waiting on each other's threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Short, real runs on the tiny random-init models: enough steps for the loss to fall well below chance.
TINY_TRAINER = ["trainer.max_steps=150", "trainer.batch_size=32", "trainer.logging_steps=10", "logger=none"]


def compose_run(overrides, results=None):
    """The config `lab-train <overrides>` would run (Hydra compose, no training)."""
    extra = [f"paths.results={results}"] if results else []
    return compose([*overrides, *extra], validated=False)


@pytest.fixture(autouse=True)
def _fresh_wandb_setup():
    """wandb keeps one process-wide setup whose settings (WANDB_DIR among them) are read from the
    environment once: a test that points them elsewhere must not leave them to the next test."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()


@pytest.fixture
def compose_cfg():
    return compose_run


@pytest.fixture(scope="session")
def vader_cache():
    """The lab cache holding the vaderSentiment sdist (movie-sentences), downloaded on first use: any
    test that reads movie-sentences asks for it, whichever worker and order it runs in."""
    from lab import fetch
    from lab.paths import default_cache_dir

    fetch.fetch_vader(default_cache_dir())
    return default_cache_dir()
