"""The names of an estimate's memory categories and the budget's rows, in table order, and the rule
text the tables print: plain Python, no torch, so lab-plan renders and checks its arguments without
loading the estimator (lab.memory.budget fills these rows with bytes).
"""

from __future__ import annotations

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


def weight_label(key: str) -> str:
    role, storage = key.split("_", 1)
    return f"weights: {role} {STORAGE.get(storage, storage)}"
