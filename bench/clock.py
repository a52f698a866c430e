"""The device clock and memory hygiene every measurement of bench/ shares."""

from __future__ import annotations

import ctypes
import gc
import statistics

import torch


def sync(device: str) -> None:
    """Wait for queued CUDA kernels, so a clock read after it times work done, not work launched."""
    if device == "cuda":
        torch.cuda.synchronize()


def release_memory() -> None:
    """Return freed heap pages to the OS so the next peak-RSS baseline starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
