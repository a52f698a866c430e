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
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    artifacts: list = field(default_factory=list)
    exit_code: int | None = None  # None: the run never finished (killed)


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
    """key (or nested_key path) -> value, from W&B's `value_json` items."""
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
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
        run.id, run.name, run.group, run.project, run.tags = r.run_id, r.display_name, r.run_group, r.project, list(r.tags)
        run.config.update(_config(r.config.update))
    elif kind == "config":
        run.config.update(_config(record.config.update))
    elif kind == "history":
        run.history.append(_items(record.history.item))
    elif kind == "summary":
        run.summary.update(_items(record.summary.update))
        for item in record.summary.remove:
            run.summary.pop(item.key or "/".join(item.nested_key), None)
    elif kind == "artifact":
        a = record.artifact
        run.artifacts.append({"name": a.name, "type": a.type, "files": [m.path for m in a.manifest.contents],
                              # where the file waits for `wandb sync` (W&B's staging copy)
                              "local_paths": [m.local_path for m in a.manifest.contents]})
    elif kind == "exit":
        run.exit_code = record.exit.exit_code


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
