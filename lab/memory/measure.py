"""Bytes held by a run: weights by role and storage, and the measured peak of the device.

Units: bytes. Tables convert with GB = 1e9 and GiB = 2**30 and say which.
"""

from __future__ import annotations

import os

import torch


def quant_constant_bytes(param) -> int:
    """Bytes of a bitsandbytes 4-bit weight's quantization constants (absmax, codebooks, offset)."""
    state = param.quant_state
    total = state.absmax.nbytes + (state.code.nbytes if state.code is not None else 0)
    if state.nested:
        total += state.state2.absmax.nbytes + state.state2.code.nbytes + state.offset.nbytes
    return int(total)


def weight_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of every parameter, keyed `<trainable|frozen>_<storage>`.

    Storage is the dtype (`float32`, `bfloat16`, ...), or for bitsandbytes 4-bit weights
    `4bit_packed` (two 4-bit codes per byte) plus `4bit_constants` (their quantization constants).
    """
    out: dict[str, int] = {}

    def add(key: str, nbytes: int) -> None:
        out[key] = out.get(key, 0) + int(nbytes)

    for param in model.parameters():
        role = "trainable" if param.requires_grad else "frozen"
        if type(param).__name__ == "DTensor":
            param = param.to_local()  # FSDP2: this process's shard
        if type(param).__name__ == "Params4bit":
            add(f"{role}_4bit_packed", param.numel() * param.element_size())
            add(f"{role}_4bit_constants", quant_constant_bytes(param))
        else:
            add(f"{role}_{str(param.dtype).removeprefix('torch.')}", param.numel() * param.element_size())
    return dict(sorted(out.items()))


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


CUDA_POOLS = ("allocated", "reserved", "active")


def cuda_memory_record(baseline: dict, stats: dict) -> dict:
    """The record of `torch.cuda.memory_stats()` dicts taken at the baseline and now (bytes).

    Per pool (allocated: tensors; reserved: the caching allocator's segments; active: blocks in use,
    including ones freed but awaiting their stream): the baseline, the current value, the current
    and the peak above the baseline. The peak is the one since the baseline, which resets it.
    allocation retries (cudaMalloc failed, cache flushed, tried again) and OOMs say how close the
    run came to the device's limit.
    """
    out = {"device": "cuda", "unit": "bytes"}
    for pool in CUDA_POOLS:
        base = int(baseline.get(f"{pool}_bytes.all.current", 0))
        current = int(stats.get(f"{pool}_bytes.all.current", 0))
        out[f"baseline_{pool}"] = base
        out[f"current_{pool}"] = current
        out[f"current_{pool}_above_baseline"] = current - base
        out[f"peak_{pool}_above_baseline"] = int(stats.get(f"{pool}_bytes.all.peak", 0)) - base
    out["alloc_retries"] = int(stats.get("num_alloc_retries", 0)) - int(baseline.get("num_alloc_retries", 0))
    out["ooms"] = int(stats.get("num_ooms", 0)) - int(baseline.get("num_ooms", 0))
    return out


class PeakMemory:
    """The device's peak memory above a baseline taken when this object is made.

    CUDA: `torch.cuda` allocated / reserved / active (`cuda_memory_record`). CPU: the process's peak
    resident set (VmHWM), reset at the baseline through /proc/self/clear_refs so an earlier job of
    the same process (a multirun) cannot leak its peak into this one; there are no allocator pools.
    """

    def __init__(self, device: str):
        self.device = device
        self.notes = []
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_stats()
        else:
            self.baseline = {"rss": _rss_bytes("VmRSS")}
            self.notes.append("no CUDA allocator statistics on the CPU (allocated / reserved / active): the peak "
                              "is the process's peak resident set above its baseline")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.notes.append("could not reset the peak RSS: peak_rss_above_baseline may include earlier peaks")

    def read(self) -> dict:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return cuda_memory_record(self.baseline, torch.cuda.memory_stats())
        peak, base = _rss_bytes("VmHWM"), self.baseline["rss"]
        return {"device": "cpu", "unit": "bytes", "baseline_rss": base,
                "peak_rss_above_baseline": None if peak is None or base is None else peak - base,
                "notes": self.notes}
