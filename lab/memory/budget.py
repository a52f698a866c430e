"""An estimate as a GPU budget: bytes by category, the peak, the headroom rule's allowance, and the
largest batch (or sequence length) that fits a card.

Categories (bytes, from `lab.memory.estimate.summarize`):

- weights, one row per role and storage (frozen 4-bit packed codes, frozen 4-bit quantization
  constants, frozen bfloat16, trainable float32, ...);
- gradients (one per trainable parameter, in its dtype) and optimizer state;
- saved activations: what autograd keeps for backward, without the next row;
- autocast weight copies: bf16 casts of weights that are not bf16 (full fine-tuning's fp32 master
  weights; QLoRA's fp32 lm_head), saved for backward because the layer's input needs a gradient;
- buffers (rotary frequencies, position ids).

Peak = the sum of these on the device (every category held at once: gradients are allocated in
the backward while saved activations are freed, so this is an upper bound of the tensors). With
gradient checkpointing autocast also caches bf16 copies of trainable weights until the forward
ends; they are freed before any gradient exists and are at most half the gradients' bytes, so the
row `autocast cache (freed before backward)` is shown, not summed, unless the gradients live on
the host (offload): then the device holds the cache instead of them, and the peak counts it.
"""

from __future__ import annotations

from typing import Callable

from lab.memory import estimate as estimator
from lab.memory import gpus
from lab.memory.labels import ALLOCATOR, CONTEXT, weight_label


def categories(est: dict) -> dict[str, int]:
    """The estimate's bytes by category, in table order; see the module docstring."""
    out = {weight_label(k): v for k, v in est["weights"].items()}
    copies = est["activations_detail"]["by_part"].get("autocast weight copies", 0)
    out["gradients"] = est["gradients"]
    out["optimizer state"] = est["optimizer_state"]
    out["saved activations"] = est["activations"] - copies
    out["autocast weight copies (saved)"] = copies
    out["buffers"] = est["buffers"]
    return out


def budget(est: dict) -> dict[str, int]:
    """Categories, then the peak on the device, the headroom allowance and what the GPU needs."""
    out = categories(est)
    out["autocast cache (freed before backward)"] = est["autocast_cache"]
    peak = device_peak(est)
    out["host (offloaded)"] = est["host_total"]
    out["peak estimate (device)"] = peak
    out[CONTEXT] = gpus.CONTEXT_BYTES
    out[ALLOCATOR] = gpus.allowance(peak) - gpus.CONTEXT_BYTES
    out["needed on the GPU"] = gpus.needed(peak)
    return out


def device_peak(est: dict) -> int:
    """The estimate's peak on the device. The autocast cache lives until the forward ends, the
    gradients from the backward on: the device holds the larger of the two (only when gradients are
    offloaded can the cache be the larger)."""
    on_device = est["placement"]["device"].get("gradients", 0)
    return est["device_total"] - on_device + max(on_device, est.get("autocast_cache", 0))


def peak(plan: estimator.Plan, batch: int, seq_len: int, offload: str = "none", exact_part_alone: bool = False) -> dict:
    """The device peak of one configuration (its Plan) at this batch and sequence length: the one
    answer to "does it fit" that the pre-flight check and lab-plan share.

    Returns {"peak", "activations" (they always stay on the device and grow with the batch), "fixed"
    (the rest), "estimate" (estimator.summarize's)}. exact_part_alone: a family without an activation
    formula gets the exact part alone (activations 0) instead of NotImplementedError.
    """
    try:
        est = estimator.summarize(plan, batch, seq_len, offload=offload)
    except NotImplementedError:
        if not exact_part_alone:
            raise
        est = estimator.summarize(plan, batch, seq_len, offload=offload, activations=False)
    top, activations = device_peak(est), est.get("activations", 0)
    return {"peak": top, "activations": activations, "fixed": top - activations, "estimate": est}


def device_bytes(plan: estimator.Plan, batch: int, seq_len: int, offload: str) -> int:
    return peak(plan, batch, seq_len, offload)["peak"]


def largest(plan: estimator.Plan, fits: Callable[[int], bool], batch: int, seq_len: int, vary: str = "batch",
            offload: str = "none", limit: int | None = None, exact_part_alone: bool = False) -> int:
    """The largest batch (vary="batch", at seq_len) or sequence length (vary="seq_len", at batch)
    whose peak `fits` (a card under the headroom rule: `gpus.fits`, or the pre-flight's free bytes);
    0 if not even 1 fits. Bytes grow with both, so a doubling search then bisection finds it in a
    few dozen meta-device estimates."""
    limit = limit or (1 << 16)

    def ok(n: int) -> bool:
        b, s = (n, seq_len) if vary == "batch" else (batch, n)
        return fits(peak(plan, b, s, offload, exact_part_alone)["peak"])

    if not ok(1):
        return 0
    low, high = 1, 2
    while high <= limit and ok(high):
        low, high = high, high * 2
    if high > limit:
        return limit if ok(limit) else _bisect(ok, low, limit)
    return _bisect(ok, low, high)


def _bisect(ok, low: int, high: int) -> int:
    """ok(low) holds and ok(high) does not: the last n that holds."""
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low
