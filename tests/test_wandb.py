"""W&B: one offline run per job, closed every time; its failure never costs the local record; no secret leaks."""

import json
from pathlib import Path

from analysis.wandb_files import read_run
from conftest import compose_run
from lab.train import run

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
    staged = json.loads(Path(read_run(str(offline_runs[0])).artifacts[0]["local_paths"][0]).read_text())
    assert staged["run_id"] == record["run_id"] and staged["config"]["logger"]["mode"] == "offline"
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.yaml"), *tmp_path.rglob("*.log"),
                 *tmp_path.rglob("*.txt")]:
        assert SECRET not in path.read_text(errors="ignore"), path


def test_wandb_failure_keeps_the_local_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # An unknown mode makes wandb.init raise: the run must still train and write its record.
    record = run(compose_run([*TINY, "logger=wandb", "logger.mode=not-a-mode"], results=tmp_path / "results"))
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


def test_sweep_runs_are_their_records_in_wandb_one_per_run_id_after_kill_and_rerun(tmp_path):
    import os
    import signal
    import time

    from analysis.wandb_files import read_dir
    from lab.tracking import wandb_id
    from sweep_helpers import finish, lab_multirun, records

    results, sweep_dir, wandb_dir = tmp_path / "results", tmp_path / "multirun", tmp_path / "wandb"
    killed = lab_multirun(tmp_path, results, sweep_dir, *WANDB_SWEEP, start_new_session=True)
    deadline = time.time() + 300
    # Kill the first job a second after its W&B run opened: killed while it trains.
    while not list(wandb_dir.glob("offline-run-*")):
        assert killed.poll() is None and time.time() < deadline, killed.stdout.read()[-4000:]
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    wait_for_wandb_core_of(killed.pid)
    assert not records(results), "the kill came after a run had finished"

    finish(lab_multirun(tmp_path, results, sweep_dir, *WANDB_SWEEP))
    found = records(results)
    assert len(found) == 2 and all(r["status"] == "ok" for r in found.values())
    runs = read_dir(str(wandb_dir))  # what `wandb sync wandb/offline-run-*` would upload
    assert sorted(run.id for run in runs) == sorted(wandb_id(rid) for rid in found)  # one W&B run per run id
    (superseded,) = wandb_dir.glob("superseded-offline-run-*")  # the killed attempt, set aside
    assert read_run(str(superseded)).exit_code is None  # it never finished: an orphan, were it synced
    for run in runs:
        record = found[run.summary["run_id"]]
        assert run.group == "wandb-check" and run.exit_code == 0
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
        assert (artifact["name"], artifact["type"], artifact["files"]) == (f"result-{run.id}", "result", ["result.json"])
        assert json.loads(Path(artifact["local_paths"][0]).read_text())["curve"] == record["curve"]


def wait_for_wandb_core_of(pid: int, timeout: float = 60) -> None:
    """wandb-core runs in its own session (a kill of the job's group misses it) and exits once it sees
    its client gone; until then it may still write into the killed run's folder."""
    import time

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
