"""What a run decides from its config and its device: the device, the compute dtype, the Trainer's
precision and the optimizer, each with the note a fallback leaves in the record.

One module for the run (lab.recipe) and the estimator (lab.memory.estimate): if the two decided
apart, the estimator would estimate a different run from the one measured. A device that is not
present (estimating for CUDA on a CPU machine) is assumed to support bf16, as every GPU since
Ampere does; where it is present, it is asked.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError

CPU_BF16_SLOW = "bf16 matmul is several times slower than fp32 on a CPU without bf16 instructions"


def resolve_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", requested, "cpu or auto: torch sees no CUDA device here")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(requested)


def bf16_supported(device: str) -> bool:
    if device != "cuda":
        return False
    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True


def four_bit(cfg: DictConfig) -> bool:
    """The base is 4-bit (base=4bit; method=qlora): the method has a quant section."""
    return cfg.method.get("quant") is not None


def compute_dtype(cfg: DictConfig, device: str, notes: list[str] | None = None) -> torch.dtype:
    """Dtype of the frozen base weights and of 4-bit dequantization."""
    if four_bit(cfg) and cfg.method.quant.compute_dtype != "auto":
        dtype = getattr(torch, str(cfg.method.quant.compute_dtype))
        if device == "cpu" and dtype != torch.float32 and notes is not None:
            notes.append(f"compute dtype {cfg.method.quant.compute_dtype} on the CPU: expect it to run several "
                         "times slower than float32 on most CPUs (method.quant.compute_dtype=auto picks float32 here)")
        return dtype
    if cfg.method.get("peft_type") is not None and bf16_supported(device):
        return torch.bfloat16
    # Full fine-tuning keeps fp32 master weights (bf16 comes from autocast); the CPU computes in fp32.
    return torch.float32


def cpu_bf16_supported() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), which oneDNN's bf16 matmuls use;
    without them bf16 is emulated and slower than fp32. (torch.cpu's checks are private: absent, no.)"""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision(cfg: DictConfig, device: str, notes: list[str] | None = None) -> str:
    """The Trainer's mixed precision: fp32, bf16 or fp16.

    `auto` is bf16 on a CUDA device that supports it, else fp32: on the CPU the default stays fp32
    until bf16 is shown to score the same (sweeps/bf16_vs_fp32.yaml compares them, paired on seeds).
    `bf16` on a CPU with bf16 instructions is bf16 autocast; on one without, and fp16 on any CPU
    (no fast fp16 path), it computes in fp32 and says so in the record's notes.
    """
    chosen = str(cfg.trainer.precision)
    if chosen == "auto":
        chosen = "bf16" if bf16_supported(device) else "fp32"
    if device == "cpu" and (chosen == "fp16" or (chosen == "bf16" and not cpu_bf16_supported())):
        if notes is not None:
            why = CPU_BF16_SLOW if chosen == "bf16" else "fp16 has no fast path on a CPU"
            notes.append(f"trainer.precision={chosen} on this CPU: computing in fp32 ({why})")
        chosen = "fp32"
    return chosen


def autocast_dtype(cfg: DictConfig, device: str) -> torch.dtype | None:
    """The dtype autocast computes in under `precision`, or None without autocast."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision(cfg, device))


def choose_optimizer(cfg: DictConfig, device: str, notes: list[str] | None = None) -> tuple[str, str]:
    """(requested, used): an adapter on a 4-bit base (QLoRA) asks for paged AdamW, which pages only on CUDA."""
    requested = str(cfg.method.get("optimizer") or "auto")
    notes = notes if notes is not None else []
    if requested == "auto":
        requested = "paged_adamw_32bit" if four_bit(cfg) else "adamw_torch"
        if requested != "adamw_torch" and OmegaConf.select(cfg, "distributed.mode") == "fsdp":
            requested = "adamw_torch"
            notes.append("method.optimizer=auto under FSDP: adamw_torch (bitsandbytes optimizers do not take "
                         "FSDP's sharded parameters)")
    used = requested
    if requested.startswith("paged_") and device != "cuda":
        # Only the paging is dropped: 8-bit AdamW keeps its 8-bit state on the CPU too.
        used = "adamw_8bit" if requested == "paged_adamw_8bit" else "adamw_torch"
        notes.append(f"optimizer {requested} needs CUDA to page; ran {used} on {device}")
    return requested, used
