"""W&B: one offline run per job, closed every time; its failure never costs the local record; no secret leaks."""

import json

from conftest import compose_run
from lab.train import run

TINY = ["model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=5", "rank=2"]
SECRET = "lab-test-secret-0123456789abcdef0123456789abcdef"


def test_offline_wandb_run_is_logged_and_finished(tmp_path, monkeypatch):
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    record = run(compose_run([*TINY, "logger=wandb", "logger.mode=offline"], results=tmp_path / "results"))
    assert record["status"] == "ok"
    assert record["logging"]["logger"] == "wandb" and record["logging"]["mode"] == "offline"
    assert record["logging"]["error"] is None and record["logging"]["run_path"]
    assert wandb.run is None  # finished: the next job of a multirun opens its own run
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
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
