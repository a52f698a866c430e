"""Published training-memory measurements beside the suite's estimate for the same setting.

    python -m lab.memory.tables published [--out reports]     # -> reports/published_memory.md

Each published figure (lab/memory/tables/reference/measured_elsewhere.yaml, qlora_paper.yaml: torchtune,
LitGPT, PEFT, the QLoRA paper) is set beside lab.memory's estimate for the setting as close as the
suite can express it, with the ratio published / estimate, the ratio to what the one headroom rule
(lab.memory.gpus) says a GPU needs, and a sentence on what still differs. Where a setting cannot be
expressed, the row names the missing knob. Units as the sources state them, converted to bytes:
GB = 1e9 bytes, GiB = 2**30 bytes.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

import pandas as pd
import torch
import yaml

from lab.memory import budget, gpus, labels
from lab.memory import estimate as accounting
from lab.memory.tables.common import REFERENCE, authors_dtypes, publish

GB, GIB = 1e9, 2**30
GC = "trainer.gradient_checkpointing=true"
TORCHTUNE_SEQ = 512  # alpaca_cleaned rows unpacked, padded to each batch's longest: not published


@dataclass
class Setting:
    """One published figure and the suite's closest setting (None: not expressible)."""

    source: str
    figure: str
    value: float
    unit: str  # "GB" or "GiB" (or "MB": 1e6 bytes)
    model: str | None = None
    method: str = "lora"
    rank: int | None = 8
    targets: str | None = "qv"
    overrides: list = field(default_factory=list)
    batch: int = 1
    seq_len: int = 512
    quantity: str = "peak"  # peak | weights | lora weights | weights+gradients+optimizer
    weights_dtype: torch.dtype | None = None
    optimizer: str | None = None
    authors_dtypes: bool = False
    differs: str = ""

    @property
    def published_bytes(self) -> float:
        return self.value * {"GB": GB, "GiB": GIB, "MB": 1e6}[self.unit]

    def lab_plan(self) -> str:
        """The setting as lab-plan arguments (where the suite's keys express it)."""
        if self.model is None:
            return "not expressible"
        args = [f"model={self.model}", f"method={self.method}"]
        if self.method != "full":
            args += [f"rank={self.rank}", f"method.targets={self.targets}"]
        args += list(self.overrides) + [f"trainer.batch_size={self.batch}", f"+seq_len={self.seq_len}"]
        extra = []
        if self.weights_dtype is not None:
            extra.append(f"weights in {str(self.weights_dtype).removeprefix('torch.')} (estimator's weights_dtype; "
                         "no lab-train key)")
        if self.optimizer:
            extra.append(f"optimizer {self.optimizer}")
        if self.authors_dtypes:
            extra.append("the QLoRA authors' bf16 casts of adapters, embeddings and lm_head")
        return " ".join(args) + (f" ({'; '.join(extra)})" if extra else "")


def _reference(name: str) -> dict:
    with open(os.path.join(REFERENCE, name)) as f:
        return yaml.safe_load(f)


def _row(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def settings() -> list[Setting]:
    return torchtune() + litgpt() + qlora_paper() + peft() + torchtune_readme()


def torchtune() -> list[Setting]:
    ref = _reference("measured_elsewhere.yaml")
    reserved = ref["torchtune_qlora_tutorial_llama2_7b"]["peak_reserved"]
    tutorial = "torchtune QLoRA tutorial, Llama-2-7B"
    common = ("torchtune: everything bf16 (ours: fp32 adapters and AdamW state; no lab knob for bf16 adapters); "
              "peak reserved, a high-water mark "
              "since start that keeps the allocator's cached blocks (ours: tensors held); alpaca_cleaned batches "
              f"padded to their longest row (length not published: we take {TORCHTUNE_SEQ})")
    lora = ["method.scaling=fixed", "method.alpha=16", GC]
    qlora = lora + ["method.dropout=0", "method.optimizer=adamw_torch"]
    out = [
        Setting(tutorial, "LoRA q,v r=8, after model init (peak reserved)", reserved["lora_init"], "GiB",
                "llama2-7b", "lora", 8, "qv", lora, 2, TORCHTUNE_SEQ, quantity="weights",
                differs="init's peak holds loading transients; ours: resident weights only (bf16 base, fp32 adapters)"),
        Setting(tutorial, "LoRA q,v r=8, training (peak reserved)", reserved["lora_train"], "GiB", "llama2-7b",
                "lora", 8, "qv", lora, 2, TORCHTUNE_SEQ, differs=common),
        Setting(tutorial, "QLoRA all linear r=8, after model init (peak reserved)", reserved["qlora_init"], "GiB",
                "llama2-7b", "qlora", 8, "all-linear", qlora, 2, TORCHTUNE_SEQ, quantity="weights",
                differs="init's peak holds the bf16 checkpoint being quantized (torchao NF4); ours: the resident "
                        "4-bit weights plus fp32 embeddings and lm_head (torchtune keeps them bf16)"),
        Setting(tutorial, "QLoRA all linear r=8, training (peak reserved)", reserved["qlora_train"], "GiB",
                "llama2-7b", "qlora", 8, "all-linear", qlora, 2, TORCHTUNE_SEQ,
                differs="the init high-water mark (9.13 GiB) already exceeds our whole step: peak reserved never "
                        "falls back; " + common + "; torchtune's embeddings and output bf16 (ours fp32)"),
    ]
    table = ref["torchtune_lora_tutorial_rank_table"]["rows"]
    for targets, ours in ((["q", "v"], "qv"), ("all", "all-linear")):
        for rank in (8, 64):
            value = _row(table, targets=targets, rank=rank)["peak_GB"]
            out.append(Setting("torchtune LoRA tutorial, Llama-2-7B", f"LoRA {ours} r={rank}, training (peak reserved; "
                               "printed as GB, computed / 2^30)", value, "GiB", "llama2-7b", "lora", rank, ours,
                               lora, 2, TORCHTUNE_SEQ,
                               differs=common + ("; torchtune's 'all' may adapt the output projection too (no "
                                                 "lab target: lm_head would add (4096 + 32000) x r)"
                                                 if ours == "all-linear" else "")))
    return out


def litgpt() -> list[Setting]:
    ref = _reference("measured_elsewhere.yaml")["litgpt_resource_tables_llama2_7b_a100_40gb"]["rows"]
    source = "LitGPT resource tables, Llama-2-7B, A100 40GB, micro-batch 1"
    # Alpaca's longest example is 1,304 Llama-2 tokens (the table's notes); micro-batch 1 peaks there.
    common = ("LitGPT: bf16-true (adapters and AdamW state bf16; ours fp32, no lab knob for bf16 adapters), "
              "max_memory_allocated (comparable to ours), its loss chunks the lm_head output (ours: full fp32 "
              "log-softmax, 0.17 GB here; no lab knob for a chunked loss)")
    out = []
    for quantize, method, extra, what in (("none", "lora", [], ""),
                                          ("nf4", "qlora", ["method.quant.double_quant=false"], "; QLoRA: ours keeps "
                                           "embeddings and lm_head fp32 (+0.52 GB against bf16); Fabric's plugin "
                                           "may quantize lm_head too"),
                                          ("nf4-dq", "qlora", [], "; QLoRA: ours keeps embeddings and lm_head fp32 "
                                           "(+0.52 GB against bf16); Fabric's plugin may quantize lm_head too")):
        value = _row(ref, method="lora", quantize=quantize)["peak_GB"]
        out.append(Setting(source, f"LoRA q,v r=8, quantize {quantize} (max GPU RAM)", value, "GB", "llama2-7b",
                           method, 8, "qv", ["method.scaling=fixed", "method.alpha=16", "method.optimizer=adamw_torch"]
                           + extra, 1, 1304, differs=common + what))
    return out


def qlora_paper() -> list[Setting]:
    paper = _reference("qlora_paper.yaml")
    section2 = paper["section2_memory_llama7b_flan_batch1"]
    source = "QLoRA paper (Dettmers et al. 2023)"
    paper_like = ["method.targets=all-linear", GC]
    return [
        Setting(source, "7B base model in 4 bits (section 2)", section2["base_model_4bit_MB"], "MB", "llama2-7b",
                "qlora", 8, "qv", [], quantity="weights",
                differs="LLaMA-1 7B has Llama-2-7B's shapes; MB read as 1e6 bytes (the paper does not say); ours adds "
                        "fp32 embeddings and lm_head (1.05 GB) after peft's kbit preparation"),
        Setting(source, "7B LoRA parameters, '0.2 % of the weights' (section 2)", section2["lora_parameters_MB"], "MB",
                "llama2-7b", "qlora", 8, "all-linear", [], quantity="lora weights",
                differs="missing knob: an adapter sized as a share of the weights (the suite sets a rank; r=8 on every "
                        "linear layer is 0.30 %, in fp32 where the paper's are bf16)"),
        Setting(source, "7B LoRA input gradients, batch 1 (567 MB) and 18 MB per sequence with checkpointing",
                section2["lora_input_gradients_MB"], "MB",
                differs="not expressible: activation gradients are backward transients (the estimator counts tensors "
                        "saved for backward), and FLAN v2's sequence lengths are not given"),
        Setting(source, "65B, 16-bit full fine-tuning: more than this", 780, "GB", "llama-65b", "full", None, None,
                [], quantity="weights+gradients+optimizer", weights_dtype=torch.bfloat16,
                optimizer="paged_adamw_32bit",
                differs="a lower bound ('> 780 GB'): bf16 weights and gradients plus two fp32 AdamW states are 12 bytes "
                        "a parameter before any activation; lab's own full recipe keeps fp32 master weights (16 bytes)"),
        Setting(source, "65B QLoRA on one 48 GB GPU: less than this", 48, "GB", "llama-65b", "qlora", 64, "all-linear",
                paper_like[1:], authors_dtypes=True,
                differs="an upper bound ('< 48 GB'); batch and length not given (ours 1 x 512); paged optimizer "
                        "state can spill to the host (6.40 GB here), which the bound may rely on"),
    ]


def peft() -> list[Setting]:
    ref = _reference("measured_elsewhere.yaml")["peft_method_comparison_llama3.2_3b_metamathqa"]["rows"]
    source = "PEFT method comparison, Llama-3.2-3B, MetaMathQA, batch 4"
    common = ("PEFT: max reserved above the baseline (keeps the allocator's cached blocks), no autocast (bf16 "
              "weights, use_amp false), batches padded to their longest row, at most 768 tokens (we take 768)")
    lora = ["method.scaling=fixed", "method.dropout=0", "trainer.precision=fp32"]
    return [
        Setting(source, "full fine-tuning (peak reserved)", _row(ref, method="full")["peak_GB"], "GB", "llama3.2-3b",
                "full", None, None, ["trainer.precision=fp32"], 4, 768, weights_dtype=torch.bfloat16,
                differs=common + "; full fine-tuning of bf16 weights with bf16 AdamW state: no lab-train key (lab's "
                                 "full recipe keeps fp32 master weights)"),
        Setting(source, "LoRA q,v r=32 (peak reserved)", _row(ref, method="lora", rank=32)["peak_GB"], "GB",
                "llama3.2-3b", "lora", 32, "qv", lora + ["method.alpha=64"], 4, 768, differs=common),
        Setting(source, "LoRA q,v r=64 (peak reserved)", _row(ref, method="lora", rank=64)["peak_GB"], "GB",
                "llama3.2-3b", "lora", 64, "qv", lora + ["method.alpha=128"], 4, 768, differs=common),
    ]


def torchtune_readme() -> list[Setting]:
    rows = _reference("measured_elsewhere.yaml")["torchtune_readme"]["rows"]
    source = "torchtune README, Llama-3.1-8B, RTX 4090, batch 2, packed 2048, compiled"
    missing = ("not expressed: no conf/model file for Llama-3.1-8B (lab-plan plan.config=<its config.json> builds "
               "it), and no lab knob for torch.compile{}")
    return [Setting(source, f"{r['method']} (peak per GPU)", float(r["peak"].split()[0]), "GiB",
                    differs=missing.format(", optimizer-in-backward" if r["method"] == "full" else ""))
            for r in rows]


def ours(setting: Setting) -> dict | None:
    """The estimate for a setting (bytes), or None where it is not expressible."""
    if setting.model is None:
        return None
    cfg = accounting.config_for(setting.model, setting.method, setting.rank, setting.targets, setting.overrides)
    plan = accounting.Plan(cfg, "cuda", weights_dtype=setting.weights_dtype)
    if setting.authors_dtypes:
        authors_dtypes(plan)
    est = accounting.summarize(plan, setting.batch, setting.seq_len, optimizer=setting.optimizer)
    lora = sum(p.numel() * p.element_size() for n, p in plan.model.named_parameters() if "lora_" in n)
    quantity = {"peak": est["peak_estimate"], "weights": est["weights_total"] + est["buffers"],
                "lora weights": lora, "weights+gradients+optimizer": est["weights_gradients_optimizer"]}
    return {"estimate": quantity[setting.quantity], "peak": est["peak_estimate"],
            "categories": budget.categories(est)}


def table() -> pd.DataFrame:
    rows = []
    for s in settings():
        est = ours(s)
        value = est["estimate"] if est else None
        needed = gpus.needed(value) if est and s.quantity == "peak" else None
        rows.append({"source": s.source, "published figure": s.figure, "published": f"{s.value:g} {s.unit}",
                     "published, GB": round(s.published_bytes / GB, 2), "our setting (lab-plan)": s.lab_plan(),
                     "compared": s.quantity if est else "",
                     "our estimate, GB": round(value / GB, 2) if est else None,
                     "needed (headroom rule), GB": round(needed / GB, 2) if needed else None,
                     "published / estimate": round(s.published_bytes / value, 2) if est else None,
                     "published / needed": round(s.published_bytes / needed, 2) if needed else None,
                     "what differs": s.differs})
    return pd.DataFrame(rows)


NOTES = [
    "GB = 1e9 bytes, GiB = 2^30 bytes; each published figure is converted from the unit its source uses "
    "(torchtune prints 'GB' computed as bytes / 2^30: GiB).",
    "our estimate: lab.memory's exact count on the meta device for the setting in the 'our setting' column (CUDA, "
    "bf16 autocast unless trainer.precision=fp32); 'compared' says which of its totals: the peak (every category held "
    "at once), the resident weights, the adapters' weights, or weights + gradients + optimizer state.",
    f"needed: the one headroom rule, {gpus.RULE}. A measured peak reserved should fall between the estimate and "
    "'needed' when the setting matches; a ratio far outside is explained in 'what differs'.",
    gpus.CATALOG_NOTE,
    labels.ACTIVATION_RULES,
]


def as_markdown(frame: pd.DataFrame) -> str:
    """The table with two decimals and blank cells where a figure has no estimate."""
    cells = frame.astype(object).where(frame.notna(), None)  # tabulate blanks None, not NaN
    return cells.to_markdown(index=False, floatfmt=".2f", missingval="")


def markdown(frame: pd.DataFrame) -> str:
    lines = ["# Published training-memory figures beside the suite's estimates", "",
             "Generated by `python -m lab.memory.tables published` from lab/memory/tables/reference/measured_elsewhere.yaml and "
             "qlora_paper.yaml; do not edit by hand.", ""]
    lines += [f"- {n}" for n in NOTES] + ["", as_markdown(frame), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.memory.tables published", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)
    print(f"written {publish(markdown(table()), args.out, 'published_memory.md')}")
