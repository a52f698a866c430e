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


class PeakMemory:
    """The device's peak memory above a baseline taken when this object is made.

    CUDA: `torch.cuda` allocated / reserved / active peaks. CPU: the process's peak resident set
    (VmHWM), reset at the baseline through /proc/self/clear_refs so an earlier job of the same
    process (a multirun) cannot leak its peak into this one.
    """

    def __init__(self, device: str):
        self.device = device
        self.note = None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            stats = torch.cuda.memory_stats()
            self.baseline = {k: stats.get(f"{k}_bytes.all.current", 0) for k in ("allocated", "reserved", "active")}
        else:
            self.baseline = {"rss": _rss_bytes("VmRSS")}
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.note = "could not reset the peak RSS: peak_rss_above_baseline may include earlier peaks"

    def read(self) -> dict:
        if self.device == "cuda":
            torch.cuda.synchronize()
            stats = torch.cuda.memory_stats()
            out = {"device": "cuda", "unit": "bytes"}
            for k, base in self.baseline.items():
                out[f"peak_{k}_above_baseline"] = int(stats.get(f"{k}_bytes.all.peak", 0) - base)
                out[f"baseline_{k}"] = int(base)
            return out
        peak, base = _rss_bytes("VmHWM"), self.baseline["rss"]
        out = {"device": "cpu", "unit": "bytes", "baseline_rss": base,
               "peak_rss_above_baseline": None if peak is None or base is None else peak - base}
        if self.note:
            out["note"] = self.note
        return out


def ledger_probe():
    """A Trainer callback measuring the first training step's saved activations and gradients."""
    from lab.ledger import probe_callback

    return probe_callback()


def ledger(trainer, model, cfg=None, device: str = "cpu") -> dict:
    """The run's measured memory ledger (lab.ledger): additive byte categories beside `weights`, and
    the measured step with the analytic estimate (lab.accounting) for the same config and shape."""
    from lab import ledger as measured_ledger

    return measured_ledger.measured(trainer, model, cfg, device)
