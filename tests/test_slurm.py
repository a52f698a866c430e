"""The SLURM launcher config composes with its defaults and overrides (nothing is submitted), and a
run that SLURM starts as several tasks finds torch's rendezvous variables."""

import os

from lab import distributed
from lab.config import compose


def _compose(*overrides):
    return compose(["hydra/launcher=slurm", *overrides], hydra=True)


def test_slurm_defaults_are_one_gpu_per_run_and_cluster_specifics_unset():
    launcher = _compose().hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_task, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.partition is None and launcher.account is None
    assert launcher.timeout_min == 720 and launcher.mem_gb == 64 and launcher.cpus_per_task == 8
    assert launcher.max_num_timeout == 0


def test_rank_sweep_on_slurm_composes_with_cluster_overrides():
    cfg = _compose("+sweep=rank_vs_accuracy", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                   "hydra.launcher.timeout_min=240", "hydra.launcher.max_num_timeout=3", "trainer.save_steps=50")
    launcher = cfg.hydra.launcher
    assert (launcher.partition, launcher.account, launcher.timeout_min, launcher.max_num_timeout) == (
        "gpu", "proj", 240, 3)
    assert cfg.hydra.sweeper.groups and cfg.trainer.save_steps == 50


def test_several_gpus_per_run_compose():
    cfg = _compose("hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4",
                   "hydra.launcher.gpus_per_task=null", "distributed=ddp")
    assert cfg.hydra.launcher.tasks_per_node == 4 and cfg.hydra.launcher.gpus_per_task is None
    assert cfg.distributed.mode == "ddp"


SLURM_TASK = {"SUBMITIT_FOLDER": "/tmp/submitit", "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242",
              "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
              "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}


def _slurm_task_environment(monkeypatch, **changes):
    """The process environment of one SLURM task, replaced for the test (restored after it)."""
    torch_keys = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in torch_keys}
    monkeypatch.setattr(os, "environ", {**env, **SLURM_TASK, **changes})


def test_a_slurm_task_of_a_multi_task_job_exports_torch_ranks(monkeypatch):
    _slurm_task_environment(monkeypatch)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    distributed._export_slurm_tasks()
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("4", "3", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible  # LOCAL_RANK picks among the node's GPUs


def test_a_single_task_job_exports_nothing(monkeypatch):
    _slurm_task_environment(monkeypatch, SLURM_NTASKS="1")
    distributed._export_slurm_tasks()
    assert "WORLD_SIZE" not in os.environ
