"""Multi-process runs: the distributed config group, its checks, and real DDP on the CPU (two
processes over gloo, launched by torchrun) with one record written by rank 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONF, ROOT, compose_run
from lab import distributed, methods, record
from lab.config import ConfigError, validate
from lab.train import run

OPTIONS = sorted(p.stem for p in (CONF / "distributed").glob("*.yaml"))


def test_the_group_has_the_documented_options():
    assert OPTIONS == ["ddp", "fsdp", "fsdp_offload", "none"]


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_maps_to_trainer_arguments(option):
    cfg = validate(compose_run([f"distributed={option}"]))
    args = distributed.training_arguments(cfg)
    if option == "none":
        assert args == {} and cfg.distributed.mode == "none"
    elif option == "ddp":
        assert "fsdp" not in args and args["ddp_find_unused_parameters"] is None
    else:
        assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
        assert args["fsdp_config"]["cpu_offload"] is (option == "fsdp_offload")


@pytest.mark.parametrize("overrides,key", [
    (["distributed.mode=zero3"], "distributed.mode"),
    (["distributed.cpu_offload=true"], "distributed.cpu_offload"),
    (["distributed=ddp", "distributed.cpu_offload=true"], "distributed.cpu_offload"),
    (["distributed=ddp", "distributed.backend=mpi"], "distributed.backend"),
    (["distributed=fsdp", "method=qlora", "method.optimizer=paged_adamw_32bit"], "method.optimizer"),
    (["distributed=fsdp_offload", "method=full", "method.optimizer=adamw_8bit"], "method.optimizer"),
])
def test_combinations_that_cannot_run_are_config_errors(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_run(overrides))
    assert err.value.key == key and "allowed:" in str(err.value)


def test_a_multi_process_mode_needs_a_launcher(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        run(compose_run(["distributed=ddp", "model=tiny-bert", "dataset=synthetic-cls", "logger=none"],
                        results=tmp_path))


def test_several_processes_need_a_multi_process_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="process 1 of 2"):
        run(compose_run(["model=tiny-bert", "dataset=synthetic-cls", "logger=none"], results=tmp_path))


def test_run_ids_of_single_process_runs_are_unchanged_and_world_size_counts(monkeypatch):
    single = validate(compose_run([]))
    assert "distributed" not in record.semantic_config(single)
    ddp = validate(compose_run(["distributed=ddp"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    two = record.run_id(ddp)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert len({record.run_id(single), two, record.run_id(ddp)}) == 3


def test_qlora_under_fsdp_stores_4bit_codes_in_the_compute_dtype():
    def storage(option):
        cfg = validate(compose_run(["method=qlora", f"distributed={option}"]))
        return methods.quantization_config(cfg, "cpu", []).bnb_4bit_quant_storage

    assert storage("none") == storage("ddp") == torch.uint8
    assert storage("fsdp") == storage("fsdp_offload") == torch.float32  # the CPU's compute dtype


TINY_DDP = ["model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=5", "logger=none",
            "dataset.sizes={train: 200, validation: 40, test: 40}"]


def _torchrun(results: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "lab.train", *TINY_DDP, f"paths.results={results}", f"hydra.run.dir={results}/hydra", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in results.glob("*/result.json")]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    results = tmp_path_factory.mktemp("ddp")
    done = _torchrun(results, "distributed=ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    return results, done


def test_ddp_on_the_cpu_writes_one_record_from_rank_0(ddp_results):
    results, done = ddp_results
    (rec,) = _records(results)
    assert rec["status"] == "ok"
    assert rec["distributed"] == {"mode": "ddp", "world_size": 2, "ran": "MULTI_CPU", "backend": "gloo",
                                  "fsdp_version": None, "cpu_offload": False, "recorded_by": "rank 0"}
    assert rec["memory"]["scope"].startswith("rank 0 of 2")
    # two processes x 5 steps x 16 sequences x 26 tokens (24 words, [CLS], [SEP])
    assert rec["timing"]["train_tokens"] == 2 * 5 * 16 * 26
    assert len(rec["timing"]["step_seconds"]) == 5
    assert rec["checks"]["frozen_base_unchanged"] is True
    assert done.stdout.count("== lora-r8-tiny-bert") == 1  # one summary: rank 0's


def test_ddp_rerun_is_skipped_by_every_process(ddp_results):
    results, _ = ddp_results
    again = _torchrun(results, "distributed=ddp")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier (ok), skipped" in again.stdout
    assert len(_records(results)) == 1


def test_fsdp_on_the_cpu_runs_as_ddp_and_says_so(tmp_path):
    done = _torchrun(tmp_path, "distributed=fsdp_offload", "method=qlora", "model=tiny-llama",
                     "dataset=synthetic-lm")
    assert done.returncode == 0, done.stderr[-3000:]
    (rec,) = _records(tmp_path)
    assert rec["status"] == "ok" and rec["distributed"]["ran"] == "MULTI_CPU"
    assert rec["distributed"]["cpu_offload"] is False
    assert any("FSDP needs GPUs" in note and "offloaded" in note for note in rec["notes"])
    assert rec["optimizer"]["requested"] == "adamw_torch"


def test_a_failed_multi_process_run_is_recorded_and_exits_nonzero(tmp_path):
    done = _torchrun(tmp_path, "distributed=ddp", "trainer.lr_scheduler=reduce_lr_on_plateau")
    assert done.returncode != 0  # each process exits 1, so a launcher never waits on a dead peer
    (rec,) = _records(tmp_path)
    assert rec["status"] == "failed" and "reduce_lr_on_plateau" in rec["error"]
    assert (tmp_path / rec["run_id"] / "traceback.txt").exists()
