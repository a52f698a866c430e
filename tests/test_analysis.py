"""The collector, on the records of a real sweep of tiny runs (tests/sweep_helpers.py)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.collect import collect, describe, read_wandb
from sweep_helpers import TINY_OK, tiny_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(sweep):
    return collect(str(sweep["results"])).runs


def test_collector_reads_every_record_with_its_status(runs):
    assert sorted(runs["status"]) == ["diverged", "failed"] + ["ok"] * TINY_OK
    ok = runs[runs["status"] == "ok"]
    assert ok["metrics.test_accuracy"].between(0, 1).all()
    assert (ok["params.trainable"] > 0).all() and (ok["peak_memory_bytes"] > 0).all()
    assert set(ok.loc[ok["method"] != "full", "targets"]) == {"qv"}
    assert ok.loc[ok["method"] == "full", "targets"].isna().all()
    assert ok.loc[ok["method"] == "full", "rank"].isna().all()


def test_collector_reports_corrupt_partial_and_foreign_folders(sweep, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(sweep["results"], results)
    (results / "lora-r4-killed-run" / "trainer").mkdir(parents=True)
    (results / "corrupt-run").mkdir()
    (results / "corrupt-run" / "result.json").write_text('{"status": "ok", "run_')
    (results / "foreign").mkdir()
    (results / "foreign" / "result.json").write_text(json.dumps({"hello": "world"}))
    some_run = next(results.glob("*/result.json")).parent
    (some_run / ".tmp-abc.json").write_text("{")  # a write cut short by kill -9: never read

    collection = collect(str(results))
    assert len(collection.runs) == TINY_OK + 2
    kinds = {Path(p["path"]).relative_to(results).parts[0]: p["problem"] for p in collection.problems}
    assert kinds["lora-r4-killed-run"].startswith("partial")
    assert kinds["corrupt-run"].startswith("corrupt")
    assert kinds["foreign"].startswith("not a run record")
    text = describe(collection)
    assert "3 run folders without a usable record" in text and "diverged" in text and "failed" in text


def test_collector_reads_wandb_runs_and_prefers_local_records(sweep, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(sweep["results"], results)
    logged = next(results.glob("*/result.json"))
    record = json.loads(logged.read_text())
    record["logging"]["run_path"] = "me/lab/abc"  # as if this run had logged online
    logged.write_text(json.dumps(record))

    def fake(run_id, config, summary):
        return SimpleNamespace(path=["me", "lab", run_id], url=f"https://wandb/{run_id}", config=config, summary=summary)

    config = {"method": {"name": "lora"}, "rank": 4, "model": {"name": "m"}, "dataset": {"name": "d"}, "seed": 0}
    api = SimpleNamespace(runs=lambda path: [
        fake("abc", config, {"status": "ok", "test_accuracy": 0.9}),
        fake("def", {**config, "seed": 1}, {"status": "ok", "test_accuracy": 0.8, "_step": 3}),
        fake("ghi", {}, {}),  # crashed before the tracker wrote a status
    ] if path == "me/lab" else [])
    collection = collect(str(results), wandb_project="lab", wandb_entity="me", wandb_api=api)
    remote = collection.runs[collection.runs["source"] == "wandb"]
    assert list(remote["run_id"]) == ["wandb:me/lab/def"]  # abc is the local record already
    assert remote.iloc[0]["metrics.test_accuracy"] == 0.8 and remote.iloc[0]["rank"] == 4
    assert len(collection.runs) == TINY_OK + 2 + 1
    assert [p["path"] for p in collection.problems] == ["wandb:me/lab/ghi"]
    assert read_wandb("lab", "me", api)[0][0]["run_id"] == "wandb:me/lab/abc"
