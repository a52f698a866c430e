"""A record is never reused for other data: a local file enters its run id by its bytes, and the
report never pools two files that share a name (issue 21)."""

import json
import os

import pandas as pd

from analysis.cells import build
from analysis.collect import collect, to_frame, separate_data
from conftest import compose_run
from lab import fingerprint
from lab.config import validate
from lab.record import run_id
from lab.train import run

CSV = ["model=tiny-bert", "dataset=csv", "rank=2", "logger=none", "trainer.max_steps=3",
       "dataset.sizes.validation=8", "dataset.sizes.test=8"]


def write_csv(path, flip: bool = False, rows: int = 40) -> str:
    labels = ("neg", "pos") if not flip else ("pos", "neg")
    lines = ["text,label"] + [f"review number {i} {'good' if i % 2 else 'bad'},{labels[i % 2]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rid(path, cache) -> str:
    return run_id(validate(compose_run([*CSV, f"dataset.path={path}", f"paths.cache={cache}"])))


def test_the_run_id_follows_the_bytes_not_the_path(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = rid(write_csv(tmp_path / "a" / "data.csv"), cache)
    # An edit (labels flipped) is other data: another id.
    edited = rid(write_csv(tmp_path / "a" / "data.csv", flip=True), cache)
    assert edited != first
    # Another folder's data.csv with other bytes: another id; with the same bytes: the same run.
    assert rid(write_csv(tmp_path / "b" / "data.csv"), cache) == first
    assert rid(write_csv(tmp_path / "b" / "data.csv", rows=30), cache) not in (first, edited)
    # A relative path is resolved where the command runs: `dataset.path=data.csv` in a and in b.
    monkeypatch.chdir(tmp_path / "a")
    cfg = validate(compose_run([*CSV, "dataset.path=data.csv", f"paths.cache={cache}"]))
    assert cfg.dataset.path == str(tmp_path / "a" / "data.csv") and run_id(cfg) == edited
    monkeypatch.chdir(tmp_path / "b")
    assert run_id(validate(compose_run([*CSV, "dataset.path=data.csv", f"paths.cache={cache}"]))) not in (edited,)


def test_the_hash_is_cached_by_size_and_mtime(tmp_path):
    path = write_csv(tmp_path / "data.csv")
    first = fingerprint.identity(path, str(tmp_path))
    cached = json.loads((tmp_path / fingerprint.CACHE_FILE).read_text())[os.path.realpath(path)]
    assert cached["sha256"] == first["sha256"] and cached["bytes"] == os.path.getsize(path)
    # Same size and mtime: the cached digest is used (a poisoned entry shows it was not recomputed).
    poisoned = {os.path.realpath(path): {**cached, "sha256": "0" * 64}}
    (tmp_path / fingerprint.CACHE_FILE).write_text(json.dumps(poisoned))
    assert fingerprint.identity(path, str(tmp_path))["sha256"] == "0" * 64
    os.utime(path, ns=(cached["mtime_ns"] + 10**9, cached["mtime_ns"] + 10**9))
    assert fingerprint.identity(path, str(tmp_path))["sha256"] == first["sha256"]


def test_an_edited_csv_trains_again(tmp_path, capsys):
    path = write_csv(tmp_path / "data.csv")
    overrides = [*CSV, f"dataset.path={path}"]
    first = run(compose_run(overrides, results=tmp_path / "results"))
    assert first["status"] == "ok" and first["data_identity"]["path"] == path
    write_csv(tmp_path / "data.csv", flip=True)
    second = run(compose_run(overrides, results=tmp_path / "results"))
    assert "skipped" not in capsys.readouterr().out
    assert second["status"] == "ok" and second["run_id"] != first["run_id"]
    assert second["data_identity"]["sha256"] != first["data_identity"]["sha256"]
    # Unchanged bytes: the finished run is found and skipped.
    assert run(compose_run(overrides, results=tmp_path / "results"))["run_id"] == second["run_id"]
    assert "finished earlier (ok), skipped" in capsys.readouterr().out


def record(name: str, sha: str, seed: int, method: str = "lora") -> dict:
    return {"run_id": f"{method}-{name}-{sha}-{seed}", "status": "ok", "health": "learned", "method": method,
            "rank": 8, "model": "tiny-bert", "dataset": name, "seed": seed, "metrics": {"test_accuracy": 0.8},
            "data_identity": {"path": f"/{sha}/{name}.csv", "bytes": 10, "sha256": sha * 16},
            "config": {"method": {"learning_rate": 0.002}, "dataset": {"source": "file"}}}


def test_two_files_of_one_name_never_share_a_cell(tmp_path):
    records = [record("data", "aaaa", s) for s in range(2)] + [record("data", "bbbb", s) for s in range(2)]
    frame, notes = separate_data(to_frame(records))
    assert sorted(frame["dataset"].unique()) == ["data [aaaaaaaa]", "data [bbbbbbbb]"]
    assert len(notes) == 1 and "never pooled" in notes[0]
    cells = build(frame, "test_accuracy")
    assert len(cells) == 2 and len({c.label for c in cells}) == 2
    assert all(len(c.runs) == 2 for c in cells)
    # Through the store, as the report reads it.
    for r in records:
        folder = tmp_path / r["run_id"]
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps(r))
    collection = collect(str(tmp_path))
    assert collection.notes == notes and collection.runs["dataset"].nunique() == 2


def test_one_file_keeps_its_plain_name():
    frame, notes = separate_data(to_frame([record("data", "aaaa", s) for s in range(2)]))
    assert notes == [] and list(frame["dataset"].unique()) == ["data"]
    assert isinstance(frame, pd.DataFrame)
