"""W&B: one offline run per job, closed every time; its failure never costs the local record; no secret leaks."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from analysis import report
from analysis.collect import collect
from analysis.wandb_files import read_dir, read_run
from conftest import compose_run
from lab import rows
from lab.tracking import sweep_group, wandb_id
from lab.train import run
from sweep_helpers import finish, lab_multirun, records

TINY = ["model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=5", "rank=2"]
SECRET = "lab-test-secret-0123456789abcdef0123456789abcdef"


def test_offline_wandb_run_is_logged_and_finished(tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # the artifact's staged copy
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    record = run(compose_run([*TINY, "logger=wandb", "logger.mode=offline"], results=tmp_path / "results"))
    assert record["status"] == "ok"
    assert record["logging"]["logger"] == "wandb" and record["logging"]["mode"] == "offline"
    assert record["logging"]["error"] is None and record["logging"]["run_path"]
    assert wandb.run is None  # finished: the next job of a multirun opens its own run
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    artifact = read_run(str(offline_runs[0])).artifacts[0]
    staged = json.loads(Path(artifact["local_paths"][0]).read_text())
    assert staged["run_id"] == record["run_id"] and staged["config"]["logger"]["mode"] == "offline"
    # the per-row outputs travel with the record, the very file whose hash the record keeps
    assert [rows.file_sha256(p) for p in artifact["local_paths"][1:]] == [record["rows"]["sha256"]]
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.yaml"), *tmp_path.rglob("*.log"),
                 *tmp_path.rglob("*.txt")]:
        assert SECRET not in path.read_text(errors="ignore"), path


def test_wandb_failure_keeps_the_local_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # wandb.init raises (an unknown mode did this before issue 21 made logger.mode a config error): the
    # run must still train and write its record.
    import wandb  # lab.tracking imports it only when a run logs to W&B

    def refuse(**kwargs):
        raise RuntimeError("W&B refused the run")

    monkeypatch.setattr(wandb, "init", refuse)
    record = run(compose_run([*TINY, "logger=wandb", "logger.mode=offline"], results=tmp_path / "results"))
    assert record["status"] == "ok"
    assert "wandb.init failed" in record["logging"]["error"]
    stored = json.loads((tmp_path / "results" / record["run_id"] / "result.json").read_text())
    assert stored["status"] == "ok" and stored["metrics"]["test_accuracy"] >= 0


def test_credentials_in_config_are_redacted():
    from lab.record import scrub_secrets

    model = {"num_key_value_heads": 8, "bos_token_id": 1, "vocab_size": 32000}
    scrubbed = scrub_secrets({"logger": {"api_key": SECRET, "project": "lab"}, "hub": {"token": SECRET},
                              "hf_token": SECRET, "model": model})
    assert SECRET not in json.dumps(scrubbed)
    assert scrubbed["logger"]["project"] == "lab"
    assert scrubbed["model"] == model  # model fields that merely contain "key"/"token" are kept


# ---- a real 2-job sweep, read back from its offline .wandb files -------------------------------------

RECORD_KEYS = ["run_id", "status", "health", "params", "memory", "optimizer", "checks", "timing", "provenance",
               "notes", "test/accuracy", "test/macro_f1", "validation/accuracy", "train/train_loss"]
WANDB_SWEEP = ["hydra.sweeper.groups=[{method:lora,rank:2}]", "hydra.sweeper.params.seed='0,1'",
               "logger=wandb", "logger.mode=offline", "trainer.eval_steps=4", "sweep.name=wandb-check"]


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    """The sweep killed while its first job trains, then run again to the end."""
    root = tmp_path_factory.mktemp("wandb-sweep")
    results, sweep_dir, wandb_dir = root / "results", root / "multirun", root / "wandb"
    with pytest.MonkeyPatch.context() as env:
        # An earlier test's wandb.init left this process's wandb-core in WANDB_SERVICE: without this the
        # sweeps would share it, and it would outlive the kill.
        env.delenv("WANDB_SERVICE", raising=False)
        return kill_and_rerun(root, results, sweep_dir, wandb_dir)


def kill_and_rerun(root, results, sweep_dir, wandb_dir) -> dict:
    killed = lab_multirun(root, results, sweep_dir, *WANDB_SWEEP, start_new_session=True)
    deadline = time.time() + 300
    while not list(wandb_dir.glob("offline-run-*")):  # a second after the first job's W&B run opened
        assert killed.poll() is None and time.time() < deadline, killed.stdout.read()[-4000:]
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    wait_for_wandb_core_of(killed.pid)
    assert not records(results), "the kill came after a run had finished"
    finish(lab_multirun(root, results, sweep_dir, *WANDB_SWEEP))
    return {"root": root, "results": results, "sweep_dir": sweep_dir, "wandb_dir": wandb_dir}


def test_sweep_runs_are_their_records_in_wandb_one_per_run_id_after_kill_and_rerun(wandb_sweep):
    found = records(wandb_sweep["results"])
    assert len(found) == 2 and all(r["status"] == "ok" for r in found.values())
    wandb_dir = wandb_sweep["wandb_dir"]
    runs = read_dir(str(wandb_dir))  # what `wandb sync wandb/offline-run-*` would upload
    assert sorted(run.id for run in runs) == sorted(wandb_id(rid) for rid in found)  # one W&B run per run id
    (superseded,) = wandb_dir.glob("superseded-offline-run-*")  # the killed attempt, set aside
    assert not any("test/accuracy" in run.summary for run in read_dir(str(wandb_dir), "superseded-*"))
    for run in runs:
        record = found[run.summary["run_id"]]
        assert run.group == "wandb-check" == record["logging"]["group"] and run.exit_code == 0
        assert all(key in run.summary for key in RECORD_KEYS), sorted(run.summary)
        assert run.summary["params"] == record["params"]
        assert run.summary["memory"]["weights"] == record["memory"]["weights"]
        assert run.summary["test/accuracy"] == record["metrics"]["test_accuracy"]
        assert run.summary["timing"]["step_seconds_median"] > 0
        evals = [point["eval/accuracy"] for point in run.history if "eval/accuracy" in point]
        assert evals and evals[-1] == record["curve"][-1]["eval_accuracy"]
        assert len([p for p in run.history if "train/loss" in p]) == 2  # 8 steps, logged every 4 (FAST)
        assert not any(key.startswith("train/validation") for point in run.history for key in point)
        (artifact,) = run.artifacts
        assert (artifact["name"], artifact["type"], artifact["files"]) == (f"result-{run.id}", "result",
                                                                          ["result.json", "rows.parquet"])
        assert json.loads(Path(artifact["local_paths"][0]).read_text())["curve"] == record["curve"]


def test_analysis_reads_the_runs_back_from_wandb_and_puts_the_report_in_the_sweeps_group(wandb_sweep, monkeypatch):
    import wandb

    wandb.teardown()  # wandb keeps the folder of this process's first run (an earlier test's tmp_path)
    monkeypatch.chdir(wandb_sweep["root"])  # the report's W&B run goes to ./wandb, beside the sweep's
    wandb_dir = str(wandb_sweep["wandb_dir"])
    local = collect(str(wandb_sweep["results"])).runs
    remote = collect(None, wandb_dir=wandb_dir).runs
    assert sorted(remote["lab_run_id"]) == sorted(local["run_id"])
    by_id = remote.set_index("lab_run_id")
    for _, row in local.iterrows():
        for column in ("params.trainable", "params.adapter", "metrics.test_accuracy", "peak_memory_bytes", "health"):
            assert by_id.loc[row["run_id"], column] == row[column], column

    built = report.main(["--results", str(wandb_sweep["results"]), "--sweep", str(wandb_sweep["sweep_dir"]),
                         "--out", "reports/wandb-check"])  # --wandb auto: the runs logged to W&B
    assert built["wandb"]["group"] == "wandb-check" and built["wandb"]["mode"] == "offline"
    wandb.teardown()  # wandb-core may still be writing the run's log after finish(); a CLI's exit waits too
    (logged,) = [run for run in read_dir(wandb_dir) if run.job_type == "report"]
    assert logged.group == "wandb-check" and logged.exit_code == 0
    table = json.loads(Path(logged.file(logged.summary["tables/main"]["path"])).read_text())
    assert table["columns"] == list(built["main_table"].columns)
    assert len(table["data"]) == len(built["main_table"])
    runs_table = json.loads(Path(logged.file(logged.summary["tables/runs"]["path"])).read_text())
    assert sorted(row[0] for row in runs_table["data"]) == sorted(local["run_id"])
    (artifact,) = [a for a in logged.artifacts if a["type"] == "report"]  # the tables are artifacts too
    assert {"report.md", "report.html", "main_table.csv"} <= set(artifact["files"])
    assert any(name.endswith(".png") for name in artifact["files"])
    # The runs are read back as before: the report's own run is no record.
    assert len(collect(None, wandb_dir=wandb_dir).runs) == 2


def test_an_unnamed_sweeps_group_is_a_hash_of_its_overrides_not_a_clock_time():
    from lab.tracking import _overrides_hash

    same = _overrides_hash(["method=lora,qlora", "rank=1,4", "paths.results=/a"])
    assert same == _overrides_hash(["rank=1,4", "method=lora,qlora", "paths.results=/b", "logger.mode=offline"])
    assert same != _overrides_hash(["method=lora,qlora", "rank=1,8"])
    assert sweep_group(compose_run(["method=lora"])) is None  # one run: its own group (the run id)
    assert wandb_id("x" * 80) != wandb_id("x" * 79 + "y") and len(wandb_id("x" * 80)) <= 64


def wait_for_wandb_core_of(pid: int, timeout: float = 60) -> None:
    """wandb-core runs in its own session (a kill of the job's group misses it) and exits once it sees
    its client gone; until then it may still write into the killed run's folder."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = False
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            alive |= any(part.endswith(b"wandb-core") for part in cmdline) and str(pid).encode() in cmdline
        if not alive:
            return
        time.sleep(0.5)
    raise AssertionError(f"wandb-core of process {pid} still running after {timeout} s")
