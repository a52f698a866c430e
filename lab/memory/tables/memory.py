"""Training memory of full fine-tuning, LoRA and QLoRA for Llama 7B-70B, from the architecture alone.

    python -m lab.memory.tables memory [--batch 1] [--seq-len 512] [--out reports]

Estimates (lab.memory.estimate, meta device) of what one training step holds on a CUDA device, by
category: frozen and trainable weights by storage, gradients, optimizer state, activations saved
for backward. Then the QLoRA paper's two 65B memory claims checked against the same estimator,
the seed document's summary comparison regenerated from these numbers, and the bytes bitsandbytes
stores per 4-bit parameter, measured on a real Linear4bit beside what the estimator assumes.
All sizes in GB = 1e9 bytes; the smallest GPU comes from the one catalog and headroom rule
(lab.memory.gpus) that lab-plan uses. Prints everything; writes memory_table.md to --out.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch
import yaml

from lab.memory import budget, gpus, labels
from lab.memory import estimate as accounting
from lab.memory.tables import published
from lab.memory.tables.common import REFERENCE, authors_dtypes, publish

GB = 1e9
MODELS = {"llama2-7b": "7B", "llama2-13b": "13B", "llama-65b": "65B", "llama2-70b": "70B"}
METHODS = ("full", "lora", "qlora")
ASSUMPTIONS = [
    "CUDA device with bf16; Trainer precision bf16 (autocast), as `trainer.precision=auto` picks there.",
    "full: fp32 master weights (lab's compute dtype for full), bf16 autocast copies of the weights held "
    "for backward (their own column), fp32 gradients, torch AdamW (2 fp32 states + a 4-byte step per tensor).",
    "lora: base in bf16; adapters fp32 (peft upcasts them); torch AdamW.",
    "qlora: NF4 with double quantization (blocksize 64, second level 256) for every linear layer but "
    "lm_head; the rest (embeddings, norms, lm_head) fp32 after peft's prepare_model_for_kbit_training; "
    "adapters fp32; paged AdamW 32-bit (bitsandbytes: 2 fp32 states).",
    "rank 8 on q_proj and v_proj, LoRA dropout 0.05 (the suite's method defaults); gradient checkpointing "
    "as the GC column says.",
    "saved activations: tensors saved for backward in one step at the stated batch and sequence length, "
    "full-length rows (no padding), without the autocast weight copies (their own column). The formula matches "
    "measured CPU fp32 runs to the byte; its CUDA rules (bf16 autocast copies, 1-byte dropout masks, flash "
    "attention) are not yet validated on a GPU.",
    "peak estimate = weights + buffers + gradients + optimizer state + saved activations + autocast weight "
    "copies, as if all were held at once (gradients are allocated during backward while saved activations are "
    "freed, so they overlap only in part). With gradient checkpointing autocast also caches bf16 copies of "
    "trainable weights until the forward ends: freed before any gradient exists and at most half the gradients' "
    "bytes, they never raise this peak.",
    f"Headroom rule (lab/memory/gpus.py, the one lab-plan uses): {gpus.RULE}.",
    gpus.CATALOG_NOTE,
    f"Activations: {labels.ACTIVATION_RULES}",
    "Any other model, method, batch or sequence length: `lab-plan` (e.g. `lab-plan model=llama2-13b method=qlora "
    "rank=64 method.targets=all-linear trainer.batch_size=4 +seq_len=2048 trainer.gradient_checkpointing=true`).",
]


def gb(nbytes: float) -> str:
    return f"{nbytes / GB:,.2f}"


def estimate(model: str, method: str, batch: int, seq_len: int, overrides=(), **kwargs) -> dict:
    cfg = accounting.config_for(model, method, None if method == "full" else 8, None, list(overrides))
    return accounting.estimate(cfg, "cuda", batch, seq_len, **kwargs)


def row(size: str, model: str, method: str, checkpointing: bool, est: dict) -> dict:
    """One line of the main table: the lab-plan categories in GB, the peak, the rule, the GPU."""
    cats = budget.categories(est)
    weights = {k: v for k, v in cats.items() if k.startswith("weights:")}
    frozen_4bit = sum(v for k, v in weights.items() if "4-bit" in k)
    peak = est["peak_estimate"]
    return {"model": f"{size} ({model})", "method": method, "GC": "on" if checkpointing else "off",
            "trainable params": f"{est['params']['trainable']:,}", "weights, 4-bit": gb(frozen_4bit),
            "weights, other": gb(sum(weights.values()) - frozen_4bit), "gradients": gb(cats["gradients"]),
            "optimizer state": gb(cats["optimizer state"]), "saved activations": gb(cats["saved activations"]),
            "autocast weight copies": gb(cats["autocast weight copies (saved)"]), "peak estimate": gb(peak),
            "needed (headroom rule)": gb(gpus.needed(peak)), "smallest GPU": gpus.smallest_gpu(peak)}


def main_table(batch: int, seq_len: int) -> tuple[list[str], dict]:
    rows, results = [], {}
    for model, size in MODELS.items():
        for method in METHODS:
            est = estimate(model, method, batch, seq_len)
            gc = estimate(model, method, batch, seq_len, ["trainer.gradient_checkpointing=true"])
            results[(model, method)] = (est, gc)
            rows += [row(size, model, method, False, est), row(size, model, method, True, gc)]
    # the cells are formatted already: keep "0.00" and "138.40" as written
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True).splitlines(), results


def activation_parts(results: dict) -> list[str]:
    """Saved activations by part for 7B, each method with checkpointing off and on (GB): where
    QLoRA's exceed LoRA's, and what checkpointing removes."""
    columns = {}
    for method in METHODS:
        for label, est in zip(("off", "on"), results[("llama2-7b", method)]):
            columns[f"{method}, GC {label}"] = est["activations_detail"]["by_part"]
    frame = pd.DataFrame(columns).fillna(0).div(GB)
    frame.loc["total"] = frame.sum()
    frame.index.name = "part (7B)"
    return frame.to_markdown(floatfmt=".3f").splitlines() + ["", labels.ACTIVATION_RULES]


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
        f"{held48(q['peak_estimate'])} |",
        f"| (same, paged optimizer state evicted to CPU RAM) | {gb(q['optimizer_state_paged'])} GB of optimizer "
        f"state in paged (unified) memory | | | {gb(resident)} | {held48(resident)} |",
        f"| (same, the authors' dtypes) | as above, with qlora.py's --bf16 casts: LoRA layers and "
        f"embed_tokens / lm_head bf16, norms fp32 | {gb(a['weights_gradients_optimizer'])} | {gb(a['activations'])} | "
        f"{gb(a['peak_estimate'])} | {held48(a['peak_estimate'])} |",
        f"| (same, authors' dtypes, paged optimizer state evicted) | | | | {gb(a_resident)} | "
        f"{held48(a_resident)} |",
        f"| (lab's qlora defaults) | r=8 on q_proj, v_proj, no gradient checkpointing | "
        f"{gb(lab_default['weights_gradients_optimizer'])} | {gb(lab_default['activations'])} | "
        f"{gb(lab_default['peak_estimate'])} | {held48(lab_default['peak_estimate'])} |",
    ]
    return lines


def held48(nbytes: float) -> str:
    """The "< 48 GB" claim on the bare estimate, then on a 48 GB card under the headroom rule."""
    bare = "held" if nbytes < 48 * GB else "not held"
    card = gpus.gpu("L40S")
    return f"{bare}; with headroom {gb(gpus.needed(nbytes))} GB: {'fits' if gpus.fits(nbytes, card) else 'does not fit'} " \
           f"a {card.gb:g} GB card"


def summary(results: dict) -> list[str]:
    with open(os.path.join(REFERENCE, "seed_tables.yaml")) as f:
        seed = {r["method"]: r for r in yaml.safe_load(f)["summary_comparison"]["rows"]}
    full_peak = results[("llama2-7b", "full")][0]["peak_estimate"]
    updates = {"full": "yes", "lora": "no: adapters only", "qlora": "no: adapters only (the 4-bit base stays frozen)"}
    lines = ["| method | updates all weights | the seed says | memory, 7B (GB; share of full) | the seed says "
             "| trainable params, 7B | the seed says | suitable for (smallest GPU, headroom rule) | the seed says |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        est = results[("llama2-7b", method)][0]
        peak = est["peak_estimate"]
        trainable = f"{est['params']['trainable']:,}" + (" (rank 8, q_proj + v_proj)" if method != "full" else "")
        claim = seed[method]
        lines.append(f"| {method} | {updates[method]} | {claim['updates_all_weights']} | {gb(peak)}; "
                     f"{peak / full_peak:.1%} | {claim['memory']} | {trainable} | {claim['trainable_7b']} "
                     f"| {gpus.smallest_gpu(peak)} | {claim['suitable_for']} |")
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
    parser = argparse.ArgumentParser(prog="python -m lab.memory.tables memory", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)
    started = time.time()
    table, results = main_table(args.batch, args.seq_len)
    doc = [f"# Training memory at batch {args.batch}, sequence length {args.seq_len} (estimates, GB = 1e9 bytes)",
           "", "Assumptions:", ""] + [f"- {a}" for a in ASSUMPTIONS] + ["", "## Full / LoRA / QLoRA", ""] + table
    doc += ["", "## Saved activations by part (7B): why QLoRA's exceed LoRA's, what checkpointing removes", ""]
    doc += activation_parts(results)
    doc += ["", "## The QLoRA paper's memory claims (65B)", ""] + qlora_claims(args.batch, args.seq_len)
    doc += ["", "## The seed's summary comparison, from these numbers (7B)", ""] + summary(results)
    doc += ["", "## What bitsandbytes stores per 4-bit parameter (a real Linear4bit, quantized on the CPU)", ""]
    doc += four_bit_storage()

    doc += ["", "## Published measurements beside the estimates", "",
            "Also written alone by `python -m lab.memory.tables published` (reports/published_memory.md).", ""]
    doc += [f"- {n}" for n in published.NOTES[:3]] + ["", published.as_markdown(
        published.table())]
    path = publish("\n".join(doc) + "\n", args.out, "memory_table.md")
    print(f"written {path} in {time.time() - started:.1f} s")

