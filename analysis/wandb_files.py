"""W&B runs read back from a local `wandb/` folder (offline runs, or online runs before syncing).

    for run in read_dir("wandb"):
        run.id, run.group, run.summary["params"], run.history[-1]["train/loss"]

A run's `.wandb` file is a LevelDB-style log (W&B's own format: a 7-byte `:W&B` header, then 32 KiB
blocks of chunks, each with a 7-byte header: checksum, length, type) whose payloads are
`wandb_internal_pb2.Record` protobufs. wandb itself has no public reader of it, so this one decodes
the log framing and leaves the payloads to wandb's protobuf classes. The checksums are not
verified: a torn tail (a killed run) ends the scan at the first chunk that does not fit.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from dataclasses import dataclass, field

from wandb.proto import wandb_internal_pb2 as pb

FILE_HEADER = struct.Struct("<4sHB")  # b":W&B", magic 0xBEE1, version
CHUNK_HEADER = struct.Struct("<IHB")  # masked crc32c, length, type
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class LocalRun:
    folder: str
    id: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list = field(default_factory=list)
    job_type: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    artifacts: list = field(default_factory=list)
    exit_code: int | None = None  # None: the run never finished (killed)

    @property
    def path(self) -> str:
        """entity/project/id as W&B names it (project/id for an offline run, which has no entity)."""
        return "/".join(part for part in (self.entity, self.project, self.id) if part)

    def file(self, name: str) -> str:
        """A file the run wrote (a logged table's JSON, ...), by its path in the run's files."""
        return os.path.join(self.folder, "files", name)


def payloads(path: str):
    """The records' bytes, in order, reassembled from their chunks."""
    with open(path, "rb") as f:
        data = f.read()
    ident, magic, _ = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run log")
    offset, pending = FILE_HEADER.size, b""
    while offset + CHUNK_HEADER.size <= len(data):
        room = BLOCK - offset % BLOCK
        if room < CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            offset += room
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        start = offset + CHUNK_HEADER.size
        if kind not in (FULL, FIRST, MIDDLE, LAST) or start + length > len(data):
            return
        chunk, offset = data[start:start + length], start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        else:
            yield pending + chunk


def records(path: str):
    for payload in payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def _items(items) -> dict:
    """key -> value from W&B's `value_json` items; an item under a `nested_key` path goes into nested dicts
    (a logged table's summary is {"tables/main": {"path": ..., "nrows": ...}})."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_run(folder: str) -> LocalRun:
    """One run folder (`offline-run-<time>-<id>`): the latest of each thing it logged."""
    run = LocalRun(folder)
    for path in sorted(glob.glob(os.path.join(folder, "run-*.wandb"))):
        for record in records(path):
            _apply(run, record)
    return run


def _apply(run: LocalRun, record: pb.Record) -> None:
    kind = record.WhichOneof("record_type")
    if kind == "run":
        r = record.run
        run.id, run.entity, run.name, run.group, run.project = r.run_id, r.entity, r.display_name, r.run_group, r.project
        run.tags, run.job_type = list(r.tags), r.job_type
        run.config.update(_config(r.config.update))
    elif kind == "config":
        run.config.update(_config(record.config.update))
    elif kind == "history":
        run.history.append(_items(record.history.item))
    elif kind == "summary":
        _merge(run.summary, _items(record.summary.update))
        for item in record.summary.remove:
            run.summary.pop(item.key or item.nested_key[0], None)
    elif kind == "artifact":
        a = record.artifact
        run.artifacts.append({"name": a.name, "type": a.type, "files": [m.path for m in a.manifest.contents],
                              # where the file waits for `wandb sync` (W&B's staging copy)
                              "local_paths": [m.local_path for m in a.manifest.contents]})
    elif kind == "exit":
        run.exit_code = record.exit.exit_code


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _config(items) -> dict:
    """Config items hold {"value": ..., "desc": ...} for each top-level key."""
    out = {}
    for key, value in _items(items).items():
        out[key] = value.get("value") if isinstance(value, dict) and "value" in value else value
    return out


def read_dir(wandb_dir: str, pattern: str = "offline-run-*") -> list[LocalRun]:
    """Every run folder under `wandb_dir` that `wandb sync <wandb_dir>/<pattern>` would upload."""
    # A folder without a run log (a run killed as it opened) holds nothing `wandb sync` could upload.
    return [read_run(folder) for folder in sorted(glob.glob(os.path.join(wandb_dir, pattern)))
            if glob.glob(os.path.join(folder, "run-*.wandb"))]
