"""FLOPs: the matmul work of one training step (by the rule in bench.benchmark's docstring), and the
hardware's limit, the best rate of a large square `torch.matmul`."""

from __future__ import annotations

import statistics
import time

import torch

from bench.clock import sync
from lab.decisions import cpu_bf16_supported


def step_flops(model, cfg, batch: int, seq: int) -> dict:
    """Matmul FLOPs of one training step, by the rule in bench.benchmark's docstring."""
    heads = set(cfg.model.head_modules)
    linear = {"trainable": 0, "frozen": 0}
    params = {"trainable": 0, "frozen": 0}
    for name, module in model.named_modules():
        parts = name.split(".")
        # peft keeps an unused copy of a head it trains (modules_to_save): it never runs.
        if "original_module" in parts or not isinstance(module, torch.nn.Linear):
            continue
        role = "trainable" if module.weight.requires_grad else "frozen"
        rows = batch if heads.intersection(parts) else batch * seq
        params[role] += module.in_features * module.out_features
        linear[role] += (6 if role == "trainable" else 4) * module.in_features * module.out_features * rows
    attention = attention_flops(model, batch, seq)
    return {"total": linear["trainable"] + linear["frozen"] + attention, "linear_trainable": linear["trainable"],
            "linear_frozen": linear["frozen"], "attention": attention,
            "matmul_params_trainable": params["trainable"], "matmul_params_frozen": params["frozen"]}


def attention_flops(model, batch: int, seq: int) -> int:
    """QK^T and AV over the full square, 4*seq*d_attn per token and layer forward, times 3 for training."""
    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    return 3 * 4 * seq * d_attn * config.num_hidden_layers * batch * seq


def matmul_rates(n: int, device: str, dtype, repeats: int) -> list[float]:
    """FLOP/s of `repeats` n x n matmuls, after one warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        rates.append(2 * n ** 3 / (time.perf_counter() - start))
    return rates


def matmul_peak(device: str, sizes: list[int], repeats: int = 5) -> dict:
    """Best FLOP/s of a square matmul at each size; fp32, plus bf16 on CUDA and on a CPU with bf16
    instructions (where the suite's `trainer.precision=bf16` computes in it)."""
    bf16 = device == "cuda" or (device == "cpu" and cpu_bf16_supported())
    dtypes = [torch.float32] + ([torch.bfloat16] if bf16 else [])
    out = {}
    for dtype in dtypes:
        rows = []
        for n in sizes:
            rates = matmul_rates(n, device, dtype, repeats)
            rows.append({"n": n, "flops_per_s_median": statistics.median(rates), "flops_per_s_min": min(rates),
                         "flops_per_s_max": max(rates)})
        name = str(dtype).removeprefix("torch.")
        out[name] = {"sizes": rows, "peak_flops_per_s": max(r["flops_per_s_max"] for r in rows)}
    return out
