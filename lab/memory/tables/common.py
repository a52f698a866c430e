"""Shared by the tables: the folder of reference figures (published setups and what they measured),
the QLoRA authors' dtypes (for estimating the runs they measured), and writing a generated table."""

from __future__ import annotations

import os

import torch

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")


def authors_dtypes(plan) -> None:
    """Recast a QLoRA plan as the authors' qlora.py does with --bf16 (on the meta device)."""
    for name, module in plan.model.named_modules():
        if hasattr(module, "lora_A"):
            for adapters in (module.lora_A, module.lora_B):
                for param in adapters.parameters():
                    param.data = param.data.to(torch.bfloat16)
        elif ("lm_head" in name or "embed_tokens" in name) and getattr(module, "weight", None) is not None:
            if module.weight.dtype == torch.float32:
                module.weight.data = module.weight.data.to(torch.bfloat16)


def publish(text: str, folder: str, name: str) -> str:
    """Print a generated Markdown file and write it into `folder`; return its path."""
    print(text)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path
