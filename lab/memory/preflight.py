"""Before anything loads: does the run fit the device? The estimator's peak against free memory.

A 7B model in fp32 on a laptop should fail in seconds, saying what it needs, what there is and what
would fit, not after a 13 GB download or deep inside the allocator. The estimate is built on the
meta device from the model's `architecture` (lab.memory.estimate), so models configured only by a
checkpoint are not checked here (their config.json would have to be fetched first).
"""

from __future__ import annotations

import os

import psutil
import torch
from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError
from lab.memory import budget, estimate, gpus
from lab.paths import CONF_DIR

GIB = 2**30


def available_bytes(device: str) -> int:
    """Free memory where the run's tensors will live: the GPU's free bytes, or the host's available RAM."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return psutil.virtual_memory().available


def budget_bytes(free: int, device: str) -> float:
    """The largest estimate that fits in `free` bytes by the one headroom rule (lab.memory.gpus): on a
    GPU both allowances; on the host only the proportional one, as there is no CUDA context there."""
    context = gpus.CONTEXT_BYTES if device.startswith("cuda") else 0
    return (free - context) / (1 + gpus.ALLOCATOR_SHARE)


def check_fits(cfg: DictConfig, device: str) -> dict | None:
    """Raise ConfigError when the estimated peak exceeds what `device` has free; return the estimate."""
    if not cfg.model.architecture or not cfg.memory_check or cfg.distributed.mode != "none":
        return None
    seq_len = _longest_sequence(cfg)
    peak = _estimate(cfg, device, cfg.trainer.batch_size, seq_len)
    free = available_bytes(device)
    if peak["peak"] <= budget_bytes(free, device):
        return peak
    raise ConfigError("model", cfg.model.name, _what_would_fit(cfg, device, peak, free, seq_len))


def _longest_sequence(cfg: DictConfig) -> int:
    """Synthetic rows have a known length (plus two special tokens); other data may reach max_length."""
    if cfg.dataset.source == "synthetic":
        return min(cfg.model.max_length, cfg.dataset.length + 2)
    return cfg.model.max_length


def _estimate(cfg: DictConfig, device: str, batch: int, seq_len: int) -> dict:
    """The one peak rule (lab.memory.budget.peak) for this config on `device`."""
    return budget.peak(_plan(cfg, device), batch, seq_len, exact_part_alone=True)


def _plan(cfg: DictConfig, device: str) -> estimate.Plan:
    return estimate.Plan(cfg, "cuda" if device.startswith("cuda") else "cpu", cfg.dataset.num_labels)


def _what_would_fit(cfg: DictConfig, device: str, peak: dict, free: int, seq_len: int) -> str:
    room = budget_bytes(free, device)
    ways = []
    batch = budget.largest(_plan(cfg, device), lambda need: need <= room, cfg.trainer.batch_size, seq_len,
                           limit=cfg.trainer.batch_size - 1, exact_part_alone=True) \
        if peak["activations"] and cfg.trainer.batch_size > 1 else 0
    if batch:
        ways.append(f"trainer.batch_size={batch}")
    if peak["activations"] and not cfg.trainer.gradient_checkpointing:
        ways.append("trainer.gradient_checkpointing=true (fewer saved activations)")
    if cfg.method.allows_4bit and cfg.method.quant is None:
        on_4bit = _estimate(on_4bit_base(cfg), device, cfg.trainer.batch_size, seq_len)
        ways.append(f"base=4bit (a 4-bit NF4 base: {on_4bit['peak'] / GIB:.1f} GiB)")
    elif cfg.method.peft_type is None:
        ways.append("method=lora or method=qlora (a frozen base: no gradients or optimizer state for it)")
    return (f"a run that fits: estimated peak {peak['peak'] / GIB:.1f} GiB on {device} (weights, gradients and "
            f"optimizer state {peak['fixed'] / GIB:.1f} GiB, activations of batch {cfg.trainer.batch_size} x "
            f"{seq_len} tokens {peak['activations'] / GIB:.1f} GiB) > {free / GIB:.1f} GiB free, less the "
            f"headroom rule's allowance ({gpus.ALLOCATOR_SHARE:.0%}, and 1 GiB on a GPU: lab.memory.gpus); try "
            + ", or ".join(ways or ["a smaller model"]) + " (memory_check=false skips this check)")


def on_4bit_base(cfg: DictConfig) -> DictConfig:
    """The same run on the 4-bit base, composed from its config file (conf/base/4bit.yaml, what
    base=4bit adds); the optimizer back to auto, which pages on a 4-bit base."""
    node = OmegaConf.load(os.path.join(CONF_DIR, "base", "4bit.yaml"))
    return OmegaConf.merge(cfg, {"method": {**OmegaConf.to_container(node.method), "optimizer": "auto"}})
