"""A local data file's identity: its resolved path and the SHA-256 of its bytes.

A run on a file is the run on those bytes: the hash enters the run id (lab.record.semantic_config)
and the record (`data_identity`), so an edited file trains again instead of reusing the old record,
and the report never pools two files that share a stem. Hashing a large file takes seconds, so the
digest is cached under the cache folder, keyed by the resolved path, size and modification time
(nanoseconds): an edit changes the mtime, and a rewrite with other bytes of the same size too.
"""

from __future__ import annotations

import json
import os

from lab.errors import ConfigError
from lab.paths import atomic_file, file_sha256, resolve_file

CACHE_FILE = "file-sha256.json"


def identity(path: str, cache_dir: str | None = None, key: str = "dataset.path") -> dict:
    """{path, bytes, sha256} of the file at `path`; ConfigError naming `key` if it is not a readable file."""
    real = resolve_file(path)
    try:
        stat = os.stat(real)
    except OSError as err:
        raise ConfigError(key, path, f"an existing local file, e.g. {key}=/abs/path/data.csv ({err.strerror})") from None
    if not os.path.isfile(real):
        raise ConfigError(key, path, f"a regular file (this is not one), e.g. {key}=/abs/path/data.csv")
    stamp = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = _load(cache_dir)
    cached = cache.get(real)
    if isinstance(cached, dict) and {k: cached.get(k) for k in stamp} == stamp and cached.get("sha256"):
        return {"path": real, "bytes": stat.st_size, "sha256": cached["sha256"]}
    try:
        sha256 = file_sha256(real)
    except OSError as err:
        raise ConfigError(key, path, f"a file this user can read ({err.strerror})") from None
    cache[real] = {**stamp, "sha256": sha256}
    _save(cache_dir, cache)
    return {"path": real, "bytes": stat.st_size, "sha256": sha256}


def _load(cache_dir: str | None) -> dict:
    if not cache_dir:
        return {}
    try:
        with open(os.path.join(os.path.expanduser(cache_dir), CACHE_FILE)) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return {}  # no cache yet, or a corrupt one: hash again
    return cache if isinstance(cache, dict) else {}


def _save(cache_dir: str | None, cache: dict) -> None:
    """Atomically (a temporary file renamed over); a cache that cannot be written only costs a rehash."""
    if not cache_dir:
        return
    folder = os.path.expanduser(cache_dir)
    try:
        with atomic_file(os.path.join(folder, CACHE_FILE)) as tmp, open(tmp, "w") as f:
            json.dump(cache, f)
    except OSError:
        pass
