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

from lab.memory import estimate as estimator
from lab.memory import gpus

STORAGE = {"4bit_packed": "4-bit packed codes", "4bit_constants": "4-bit quantization constants"}
ACTIVATION_RULES = (
    "Saved activations follow autograd: a linear layer saves its input only when its weight trains and "
    "its weight (an autocast copy, if cast) only when its input needs a gradient. LoRA saves the adapter's "
    "input (and its dropout mask) and A's output; a frozen 4-bit matmul saves no activation. QLoRA's "
    "exceed LoRA's because peft's prepare_model_for_kbit_training casts the embeddings, norms and lm_head "
    "to fp32: the residual stream is then fp32, bitsandbytes returns the MLP's gate/up outputs in its "
    "input's dtype, so SiLU's input and the gated product are saved at 4 bytes an element instead of 2 "
    "(7B, batch 1 x 512: MLP 2.16 vs 1.08 GB), and the frozen fp32 lm_head is cast to a bf16 copy "
    "(0.26 GB at 7B) saved for its input's gradient. Gradient checkpointing keeps only each layer's "
    "input (fp32 for QLoRA, bf16 for LoRA) and recomputes the rest in the backward: it removes the "
    "attention, MLP, norm and adapter tensors inside the layers, not the loss's fp32 log-softmax "
    "(tokens x vocabulary) nor the lm_head copy.")


CONTEXT = "allowance: CUDA context, workspaces (1 GiB)"
ALLOCATOR = f"allowance: allocator, transients ({gpus.ALLOCATOR_SHARE:.0%} of the peak)"
ORDER = ("gradients", "optimizer state", "saved activations", "autocast weight copies (saved)", "buffers",
         "autocast cache (freed before backward)", "host (offloaded)", "peak estimate (device)",
         CONTEXT, ALLOCATOR, "needed on the GPU")


def _weight_label(key: str) -> str:
    role, storage = key.split("_", 1)
    return f"weights: {role} {STORAGE.get(storage, storage)}"


def categories(est: dict) -> dict[str, int]:
    """The estimate's bytes by category, in table order; see the module docstring."""
    out = {_weight_label(k): v for k, v in est["weights"].items()}
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
    # The cache lives until the forward ends, the gradients from the backward on: the device holds
    # the larger of the two. Only when gradients are offloaded can the cache be the larger.
    on_device = est["placement"]["device"].get("gradients", 0)
    peak = est["device_total"] - on_device + max(on_device, est["autocast_cache"])
    out["host (offloaded)"] = est["host_total"]
    out["peak estimate (device)"] = peak
    out[CONTEXT] = gpus.CONTEXT_BYTES
    out[ALLOCATOR] = gpus.allowance(peak) - gpus.CONTEXT_BYTES
    out["needed on the GPU"] = gpus.needed(peak)
    return out


def device_bytes(plan: estimator.Plan, batch: int, seq_len: int, offload: str) -> int:
    return budget(estimator.summarize(plan, batch, seq_len, offload=offload))["peak estimate (device)"]


def largest(plan: estimator.Plan, card: gpus.Gpu, batch: int, seq_len: int, vary: str = "batch",
            offload: str = "none", limit: int | None = None) -> int:
    """The largest batch (vary="batch", at seq_len) or sequence length (vary="seq_len", at batch)
    whose estimate fits `card` under the headroom rule; 0 if not even 1 fits. Bytes grow with
    both, so a doubling search then bisection finds it in a few dozen meta-device estimates."""
    limit = limit or (1 << 16)

    def ok(n: int) -> bool:
        b, s = (n, seq_len) if vary == "batch" else (batch, n)
        return gpus.fits(device_bytes(plan, b, s, offload), card)

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
