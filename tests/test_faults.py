"""Faults injected into real tiny runs: each is recorded with its status and nothing else is lost."""

import json
import os
import resource
import subprocess
import sys

import pytest
import transformers

from conftest import ROOT, compose_run
from lab import record as rec
from lab.train import run

TINY = ["model=tiny-bert", "dataset=synthetic-cls", "rank=2", "logger=none", "trainer.max_steps=10",
        "trainer.logging_steps=1"]


def fail_at_training_step(monkeypatch, step: int):
    """Make the real Trainer raise inside its `step`-th training step (1-based)."""
    original = transformers.Trainer.training_step
    calls = {"n": 0}

    def training_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise RuntimeError(f"injected fault at training step {step}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", training_step)


def test_exception_mid_training_is_recorded_with_traceback(tmp_path, monkeypatch):
    fail_at_training_step(monkeypatch, 4)
    record = run(compose_run(TINY, results=tmp_path))
    assert record["status"] == "failed"
    assert "injected fault at training step 4" in record["error"]
    run_dir = tmp_path / record["run_id"]
    assert "injected fault" in (run_dir / "traceback.txt").read_text()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"


def test_failed_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    overrides = [*TINY, "trainer.save_steps=5"]
    fail_at_training_step(monkeypatch, 8)
    first = run(compose_run(overrides, results=tmp_path))
    assert first["status"] == "failed"
    assert (tmp_path / first["run_id"] / "trainer" / "checkpoint-5").is_dir()
    monkeypatch.undo()
    second = run(compose_run(overrides, results=tmp_path))
    assert second["run_id"] == first["run_id"] and second["status"] == "ok"
    assert any("resumed from" in n and n.endswith("checkpoint-5") for n in second["notes"])
    assert second["timing"]["train_steps"] == 10
    assert not (tmp_path / first["run_id"] / "traceback.txt").exists()


def test_nan_loss_stops_the_run_as_diverged(tmp_path):
    overrides = [o for o in TINY if not o.startswith("rank=")]
    record = run(compose_run([*overrides, "method=full", "method.learning_rate=1e30", "trainer.max_steps=30"],
                             results=tmp_path))
    assert record["status"] == "diverged"
    assert "training loss" in record["error"]
    assert record["timing"]["wall_seconds"] > 0


def test_out_of_memory_at_the_allocation_site_is_recorded_as_oom(tmp_path):
    # A real allocation failure: the child's data segment is capped below what a huge batch needs.
    def cap_memory():
        resource.setrlimit(resource.RLIMIT_DATA, (int(1.8 * 2**30), int(1.8 * 2**30)))

    args = ["model=tiny-llama", "dataset=synthetic-lm", "method=lora", "logger=none", "trainer.batch_size=2000",
            "dataset.sizes.train=2000", "trainer.max_steps=2", f"paths.results={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, preexec_fn=cap_memory,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-2000:]  # lab.train.EXIT_CODES["oom"]
    [path] = tmp_path.glob("*/result.json")
    stored = json.loads(path.read_text())
    assert stored["status"] == "oom"
    assert "can't allocate memory" in stored["error"]
    assert stored["config"]["trainer"]["batch_size"] == 2000  # the config that ran out is kept


def test_corrupt_record_is_reported_and_rerun(tmp_path, caplog):
    first = run(compose_run(TINY, results=tmp_path))
    path = tmp_path / first["run_id"] / "result.json"
    path.write_text('{"status": "ok", "metrics": {')  # as a crash of an older writer would leave it
    assert rec.read_record(str(path)) is None
    second = run(compose_run(TINY, results=tmp_path))
    assert second["status"] == "ok" and "unreadable record" in caplog.text
    assert json.loads(path.read_text())["run_id"] == first["run_id"]


def test_a_run_held_by_another_worker_is_not_trained_twice(tmp_path):
    cfg = compose_run(TINY, results=tmp_path)
    from lab.config import validate

    path = rec.record_path(str(tmp_path), rec.run_id(validate(cfg)))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
        "f = open(os.path.join(os.path.dirname(sys.argv[1]), '.lock'), 'w'); "
        "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"), path],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run(cfg)["status"] == "running-elsewhere"
        assert not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()
    assert run(cfg)["status"] == "ok"  # the lock died with its holder


def test_records_are_written_atomically(tmp_path):
    target = tmp_path / "run" / "result.json"
    rec.write_json_atomic(str(target), {"status": "ok", "n": 1})
    with pytest.raises(TypeError):
        rec.write_json_atomic(str(target), {"status": "ok", "bad": object.__new__(type("X", (), {"__str__": None}))})
    assert json.loads(target.read_text()) == {"status": "ok", "n": 1}  # the old record survives a failed write
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temporary file left behind


def test_pickled_weights_are_refused_and_remote_code_is_off(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lab import models
    from lab.config import ConfigError, validate

    cfg = validate(compose_run(["model=tiny-bert"]))
    assert cfg.model.trust_remote_code is False
    source = models.checkpoint_path(cfg.model, cfg.paths.cache)
    pickled = tmp_path / "pickled"
    model = AutoModelForSequenceClassification.from_pretrained(source)
    model.config.save_pretrained(pickled)
    __import__("torch").save(model.state_dict(), pickled / "pytorch_model.bin")  # an old-style pickled checkpoint
    AutoTokenizer.from_pretrained(source).save_pretrained(pickled)
    assert not list(pickled.glob("*.safetensors"))
    local = validate(compose_run(["model=tiny-bert", "model.source=local", f"model.path={pickled}"]))
    with pytest.raises(ConfigError, match="safetensors"):
        models.load_model(str(pickled), local.model, __import__("torch").float32, None, 2, "cpu")
