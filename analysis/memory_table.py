"""Training memory of full fine-tuning, LoRA and QLoRA for Llama 7B-70B, from the architecture alone.

    python -m analysis.memory_table [--batch 1] [--seq-len 512] [--out reports]

Estimates (lab.memory.estimate, meta device) of what one training step holds on a CUDA device, by
category: frozen and trainable weights by storage, gradients, optimizer state, activations saved
for backward. Then the QLoRA paper's two 65B memory claims checked against the same estimator,
the seed document's summary comparison regenerated from these numbers, and the bytes bitsandbytes
stores per 4-bit parameter, measured on a real Linear4bit beside what the estimator assumes.
All sizes in GB = 1e9 bytes. Prints everything; writes memory_table.md to --out.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import yaml

from lab.memory import estimate as accounting

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")
GB = 1e9
MODELS = {"llama2-7b": "7B", "llama2-13b": "13B", "llama2-70b": "70B", "llama-65b": "65B"}
METHODS = ("full", "lora", "qlora")
# Nominal capacities as sold, read as GB = 1e9 bytes (cards usually hold a little more: an "80 GB"
# A100 has 80 GiB), with a typical card for each.
CATALOG = ((8, "8 GB (e.g. RTX 4060)"), (16, "16 GB (e.g. T4, RTX 4080)"), (24, "24 GB (e.g. RTX 4090)"),
           (40, "40 GB (A100 40GB)"), (48, "48 GB (e.g. RTX A6000, L40S)"), (80, "80 GB (A100/H100 80GB)"),
           (141, "141 GB (H200)"))
ASSUMPTIONS = [
    "CUDA device with bf16; Trainer precision bf16 (autocast), as `trainer.precision=auto` picks there.",
    "full: fp32 master weights (lab's compute dtype for full), bf16 autocast copies of the weights held "
    "for backward, fp32 gradients, torch AdamW (2 fp32 states + a 4-byte step per tensor).",
    "lora: base in bf16; adapters fp32 (peft upcasts them); torch AdamW.",
    "qlora: NF4 with double quantization (blocksize 64, second level 256) for every linear layer but "
    "lm_head; the rest (embeddings, norms) fp32 after peft's prepare_model_for_kbit_training; "
    "adapters fp32; paged AdamW 32-bit (bitsandbytes: 2 fp32 states).",
    "rank 8 on q_proj and v_proj, LoRA dropout 0.05 (the suite's method defaults); gradient checkpointing "
    "off unless a column says otherwise.",
    "activations: saved-for-backward tensors of one step at the stated batch and sequence length, full-length "
    "rows (no padding). The formula matches measured CPU fp32 runs to the byte; its CUDA rules (bf16 "
    "autocast copies, 1-byte dropout masks, flash attention) are not yet validated on a GPU.",
    "peak estimate = weights + buffers + gradients + optimizer state + saved activations, as if all were held "
    "at once (gradients are allocated during backward while saved activations are freed, so they overlap "
    "only in part). Not in it: the CUDA context, the allocator's cached and fragmented blocks, transient "
    "tensors of the backward (activation gradients, a dequantized 4-bit weight, the logits gradient) and, "
    "with gradient checkpointing, autocast's cache of bf16 weight copies, held until the forward ends.",
    "smallest device: the first catalog size (8, 16, 24, 40, 48, 80, 141 GB, then N x 80 GB) at or above the "
    "peak estimate; sizes as sold, read as 1e9 bytes.",
]


def gb(nbytes: float) -> str:
    return f"{nbytes / GB:,.2f}"


def smallest_device(nbytes: float) -> str:
    for size, label in CATALOG:
        if nbytes <= size * GB:
            return label
    return f"{math.ceil(nbytes / (80 * GB))} x 80 GB (state sharded evenly, e.g. FSDP/ZeRO-3)"


def estimate(model: str, method: str, batch: int, seq_len: int, overrides=(), **kwargs) -> dict:
    cfg = accounting.config_for(model, method, None if method == "full" else 8, None, list(overrides))
    return accounting.estimate(cfg, "cuda", batch, seq_len, **kwargs)


def breakdown(est: dict) -> dict[str, float]:
    weights = est["weights"]
    frozen_4bit = sum(v for k, v in weights.items() if k.startswith("frozen_4bit"))
    return {
        "frozen 4-bit": frozen_4bit,
        "frozen other": sum(v for k, v in weights.items() if k.startswith("frozen")) - frozen_4bit,
        "trainable": sum(v for k, v in weights.items() if k.startswith("trainable")),
        "gradients": est["gradients"],
        "optimizer": est["optimizer_state"],
        "activations": est["activations"],
        "peak": est["peak_estimate"],
    }


def main_table(batch: int, seq_len: int) -> tuple[list[str], dict]:
    header = ("| model | method | trainable params | frozen 4-bit | frozen other | trainable weights | gradients "
              "| optimizer | activations | peak estimate | smallest device | activations, GC on | peak, GC on "
              "| smallest device, GC on |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    results = {}
    for model, size in MODELS.items():
        for method in METHODS:
            est = estimate(model, method, batch, seq_len)
            gc = estimate(model, method, batch, seq_len, ["trainer.gradient_checkpointing=true"])
            results[(model, method)] = (est, gc)
            b = breakdown(est)
            lines.append(f"| {size} ({model}) | {method} | {est['params']['trainable']:,} | "
                         + " | ".join(gb(b[k]) for k in ("frozen 4-bit", "frozen other", "trainable", "gradients",
                                                          "optimizer", "activations", "peak"))
                         + f" | {smallest_device(b['peak'])} | {gb(gc['activations'])} | {gb(gc['peak_estimate'])}"
                         f" | {smallest_device(gc['peak_estimate'])} |")
    return lines, results


def qlora_claims(batch: int, seq_len: int) -> list[str]:
    with open(os.path.join(REFERENCE, "qlora_paper.yaml")) as f:
        paper = yaml.safe_load(f)
    claims = paper["claims"]
    lines = [f"Source: {paper['source']}. Claims: \"{claims[1]}\"; \"{claims[0]}\".",
             "The paper fine-tunes with LoRA r=64 on all linear layers, gradient checkpointing and paged "
             "optimizers; it gives no batch or sequence length for the figure, so ours are stated.", ""]
    # 16-bit full fine-tuning: bf16 weights and gradients, AdamW with 32-bit states.
    full16 = estimate("llama-65b", "full", batch, seq_len, optimizer="paged_adamw_32bit",
                      weights_dtype=torch.bfloat16)
    full_lab = estimate("llama-65b", "full", batch, seq_len)
    w_g_o = full16["weights_gradients_optimizer"]
    lines += [
        "| claim | setting | weights + gradients + optimizer | activations | peak estimate | held? |",
        "|---|---|---|---|---|---|",
        f"| > 780 GB, 16-bit full fine-tuning of 65B | bf16 weights and gradients, fp32 AdamW states "
        f"({full16['params']['trainable']:,} params x 12 bytes) | {gb(w_g_o)} | {gb(full16['activations'])} | "
        f"{gb(full16['peak_estimate'])} | {'held' if w_g_o > 780 * GB else 'not held'} "
        f"(even without activations: {gb(w_g_o)} GB) |",
        f"| (same, lab's full recipe) | fp32 master weights, bf16 autocast, torch AdamW | "
        f"{gb(full_lab['weights_gradients_optimizer'])} | {gb(full_lab['activations'])} | "
        f"{gb(full_lab['peak_estimate'])} | {'held' if full_lab['peak_estimate'] > 780 * GB else 'not held'} |",
    ]
    paper_like = ["method.targets=all-linear", "trainer.gradient_checkpointing=true"]
    cfg = accounting.config_for("llama-65b", "qlora", 64, None, paper_like)
    q = accounting.estimate(cfg, "cuda", batch, seq_len)
    resident = q["peak_estimate"] - q["optimizer_state_paged"]
    lab_default = estimate("llama-65b", "qlora", batch, seq_len)
    authors = accounting.Plan(cfg, "cuda")
    authors_dtypes(authors)
    a = accounting.summarize(authors, batch, seq_len)
    a_resident = a["peak_estimate"] - a["optimizer_state_paged"]
    lines += [
        f"| < 48 GB, QLoRA 65B | r=64, all linear layers, gradient checkpointing, paged AdamW 32-bit, fp32 adapters "
        f"({q['params']['trainable']:,} trainable) | {gb(q['weights_gradients_optimizer'])} | "
        f"{gb(q['activations'])} | {gb(q['peak_estimate'])} | "
        f"{'held' if q['peak_estimate'] < 48 * GB else 'not held'} |",
        f"| (same, paged optimizer state evicted to CPU RAM) | {gb(q['optimizer_state_paged'])} GB of optimizer "
        f"state in paged (unified) memory | | | {gb(resident)} | {'held' if resident < 48 * GB else 'not held'} |",
        f"| (same, the authors' dtypes) | as above, with qlora.py's --bf16 casts: LoRA layers and "
        f"embed_tokens / lm_head bf16, norms fp32 | {gb(a['weights_gradients_optimizer'])} | {gb(a['activations'])} | "
        f"{gb(a['peak_estimate'])} | {'held' if a['peak_estimate'] < 48 * GB else 'not held'} |",
        f"| (same, authors' dtypes, paged optimizer state evicted) | | | | {gb(a_resident)} | "
        f"{'held' if a_resident < 48 * GB else 'not held'} |",
        f"| (lab's qlora defaults) | r=8 on q_proj, v_proj, no gradient checkpointing | "
        f"{gb(lab_default['weights_gradients_optimizer'])} | {gb(lab_default['activations'])} | "
        f"{gb(lab_default['peak_estimate'])} | {'held' if lab_default['peak_estimate'] < 48 * GB else 'not held'} |",
    ]
    return lines


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


def summary(results: dict) -> list[str]:
    with open(os.path.join(REFERENCE, "seed_tables.yaml")) as f:
        seed = {r["method"]: r for r in yaml.safe_load(f)["summary_comparison"]["rows"]}
    full_peak = results[("llama2-7b", "full")][0]["peak_estimate"]
    updates = {"full": "yes", "lora": "no: adapters only", "qlora": "no: adapters only (the 4-bit base stays frozen)"}
    lines = ["| method | updates all weights | seed | memory, 7B (GB; share of full) | seed | trainable params, 7B "
             "| seed | suitable for | seed |", "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        est = results[("llama2-7b", method)][0]
        peak = est["peak_estimate"]
        trainable = f"{est['params']['trainable']:,}" + (" (rank 8, q_proj + v_proj)" if method != "full" else "")
        claim = seed[method]
        lines.append(f"| {method} | {updates[method]} | {claim['updates_all_weights']} | {gb(peak)}; "
                     f"{peak / full_peak:.1%} | {claim['memory']} | {trainable} | {claim['trainable_7b']} "
                     f"| {smallest_device(peak)} | {claim['suitable_for']} |")
    return lines


def four_bit_storage() -> list[str]:
    lines = ["| weight (out x in) | double quant | packed bytes | constant bytes | bytes per parameter, measured "
             "| assumed by the estimator | bits per parameter |", "|---|---|---|---|---|---|---|"]
    for out_f, in_f in ((4096, 4096), (11008, 4096)):
        for double in (True, False):
            real = accounting.measured_nf4_bytes(out_f, in_f, double)
            assumed = accounting.nf4_bytes(out_f * in_f, double)
            n = out_f * in_f
            measured = (real["packed"] + real["constants"]) / n
            model = (assumed["packed"] + assumed["constants"]) / n
            same = (real["packed"], real["constants"]) == (assumed["packed"], assumed["constants"])
            lines.append(f"| {out_f} x {in_f} | {'yes' if double else 'no'} | {real['packed']:,} | "
                         f"{real['constants']:,} | {measured:.6f} | {model:.6f} ({'equal' if same else 'DIFFERENT'})"
                         f" | {8 * measured:.4f} |")
    lines += ["", "Per parameter: 4 bits of packed code + one absmax per 64 weights (uint8 with double quantization, "
              "itself quantized per 256 with an fp32 absmax; fp32 without) + per matrix a 16-entry fp32 codebook "
              "(and with double quantization a 256-entry fp32 code and an fp32 offset): 4 + 8/64 + 32/(64*256) = "
              "4.127 bits plus 1,092 bytes per matrix; the QLoRA paper's 4.127 leaves out the per-matrix codebooks."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)
    started = time.time()
    table, results = main_table(args.batch, args.seq_len)
    doc = [f"# Training memory at batch {args.batch}, sequence length {args.seq_len} (estimates, GB = 1e9 bytes)",
           "", "Assumptions:", ""] + [f"- {a}" for a in ASSUMPTIONS] + ["", "## Full / LoRA / QLoRA", ""] + table
    doc += ["", "## The QLoRA paper's memory claims (65B)", ""] + qlora_claims(args.batch, args.seq_len)
    doc += ["", "## The seed's summary comparison, from these numbers (7B)", ""] + summary(results)
    doc += ["", "## What bitsandbytes stores per 4-bit parameter (a real Linear4bit, quantized on the CPU)", ""]
    doc += four_bit_storage()
    text = "\n".join(doc) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "memory_table.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"written {path} in {time.time() - started:.1f} s")

