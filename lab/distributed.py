"""One run over several processes: DDP or FSDP through the Trainer's accelerate.

    torchrun --nproc_per_node N -m lab.train distributed=ddp ...            # GPUs, or the CPU (gloo)
    accelerate launch --num_processes N -m lab.train distributed=fsdp ...   # GPUs

Every process composes the same config and trains. Rank 0 alone holds the run's lock, decides
whether the run is needed (an ok record is skipped) and tells the others, opens the W&B run and
writes the record; the record says how many processes trained and what accelerate really ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from omegaconf import DictConfig

from lab.config import ConfigError

LAUNCH_LINE = "torchrun --nproc_per_node N -m lab.train ... (or accelerate launch --num_processes N -m lab.train ...)"


@dataclass(frozen=True)
class Launch:
    mode: str
    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def multi_process(self) -> bool:
        return self.world_size > 1


def launch(cfg: DictConfig) -> Launch:
    """The processes this run was started with; a config they cannot run is a ConfigError."""
    _export_slurm_tasks()
    mode = cfg.distributed.mode
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if mode != "none" and "WORLD_SIZE" not in os.environ:
        raise ConfigError("distributed", mode, f"a multi-process launch: {LAUNCH_LINE}")
    if mode == "none" and world > 1:
        raise ConfigError("distributed", mode, f"ddp or fsdp: this is process {rank} of {world} "
                          "(each would otherwise train alone on the same data)")
    return Launch(mode, world, rank, int(os.environ.get("LOCAL_RANK", 0)))


def _export_slurm_tasks() -> None:
    """A SLURM job with several tasks (hydra.launcher.tasks_per_node=N) runs this in every task:
    torch's env:// rendezvous needs the ranks torchrun would have set."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_FOLDER" not in os.environ:
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # Tasks see every GPU of their node (gpus_per_node, not gpus_per_task): LOCAL_RANK picks one.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init(run: Launch, device: str, backend: str | None) -> None:
    """Join the process group before anything else, so rank 0 can share its decision and each
    process's `cuda` is its own device. The Trainer later finds accelerate's state made."""
    if run.mode == "none":
        return
    from accelerate import PartialState

    kwargs = {"backend": backend} if backend else {}
    PartialState(cpu=device == "cpu", **kwargs)


def share(run: Launch, value=None):
    """Rank 0's `value`, on every process."""
    if not run.multi_process:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def training_arguments(cfg: DictConfig) -> dict:
    """The TrainingArguments of the configured mode (none: no keys)."""
    dist = cfg.distributed
    if dist.mode == "none":
        return {}
    args = {"ddp_backend": dist.backend}
    if dist.mode == "ddp":
        # None lets the Trainer decide: search for unused parameters unless gradient checkpointing is on.
        args["ddp_find_unused_parameters"] = dist.find_unused_parameters
        return args
    args["fsdp"] = True
    args["fsdp_config"] = {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": dist.reshard_after_forward,
        "cpu_offload": dist.cpu_offload,
        "state_dict_type": "FULL_STATE_DICT",
    }
    return args


def what_ran(trainer, run: Launch, cfg: DictConfig, notes: list[str]) -> dict:
    """The record's `distributed`: what was asked, and what accelerate really set up."""
    state = trainer.accelerator.state
    ran = str(state.distributed_type).split(".")[-1]
    fsdp = getattr(state, "fsdp_plugin", None) if ran == "FSDP" else None
    # FSDP2 holds an OffloadPolicy either way; only its CPUOffloadPolicy subclass offloads.
    offload = fsdp is not None and type(fsdp.cpu_offload).__name__ == "CPUOffloadPolicy"
    out = {"mode": run.mode, "world_size": run.world_size, "ran": ran, "backend": getattr(state, "backend", None),
           "fsdp_version": getattr(fsdp, "fsdp_version", None), "cpu_offload": offload, "recorded_by": "rank 0"}
    if run.mode == "fsdp" and ran != "FSDP":
        # accelerate builds FSDP only on accelerators; CPU processes get DDP (MULTI_CPU) instead.
        notes.append(f"distributed=fsdp: accelerate ran {ran} here (FSDP needs GPUs), so nothing was sharded"
                     + (" or offloaded" if cfg.distributed.cpu_offload else ""))
    return out
