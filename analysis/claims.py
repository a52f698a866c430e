"""The seed document's accuracy claims, each judged held / not held on a sweep's numbers.

The claims (analysis/reference/seed_tables.yaml, `claims_to_test`) and the rules used here:

1. "Even at low ranks (8 or 16) LoRA performs competitively": held when LoRA is *competitive* with
   full fine-tuning at every rank of {8, 16} the sweep ran. Competitive: LoRA's mean is at most
   TOLERANCE points below full FT's, or the bootstrap interval of the difference holds 0.
2. "QLoRA maintains similar performance to full fine-tuning": held when QLoRA is *similar* to full
   FT at every rank from 8 to 256 the sweep ran. Similar: |difference| <= TOLERANCE points, or the
   difference's interval holds 0.
3. "QLoRA particularly effective with ranks between 8 and 256; beyond that gains diminish": held
   when there is a rank r* <= 256, below the largest rank run, from which no step to the next rank
   run is a gain beyond noise (a step's gain is beyond noise when the bootstrap interval of
   mean(next) - mean(this) lies above 0). r* is the smallest such rank. A sweep that stops at 256
   cannot show what happens beyond 256; the verdict says so.

Only the default conventions take part (alpha = 2r scaling, no DoRA): the seed speaks of plain
LoRA and QLoRA. Each claim is judged per setting (model, dataset, ...), on the validation-chosen
learning rates and, for comparison, at the default ones.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import uncertainty

TOLERANCE = 1.0  # points of accuracy (the table's unit)
LOW_RANKS = (8, 16)
QLORA_RANGE = (8, 256)
DEFAULT_CONVENTION = {"config.method.scaling": ("alpha_2r", "None"), "config.method.use_dora": (False, "None")}


def default_convention(cells: pd.DataFrame) -> pd.DataFrame:
    for key, allowed in DEFAULT_CONVENTION.items():
        if key in cells:
            cells = cells[cells[key].isin(allowed)]
    return cells


def _difference(a: list[float], b: list[float]) -> tuple[float, tuple[float, float]]:
    return float(np.mean(a) - np.mean(b)), uncertainty.difference_ci(a, b)


def _fmt(diff: float, interval: tuple[float, float]) -> str:
    ci = "" if math.isnan(interval[0]) else f" [{interval[0]:+.2f}, {interval[1]:+.2f}]"
    return f"{diff:+.2f}{ci}"


def competitive(diff: float, interval) -> bool:
    return diff >= -TOLERANCE or bool(uncertainty.within_noise(interval))


def similar(diff: float, interval) -> bool:
    return abs(diff) <= TOLERANCE or bool(uncertainty.within_noise(interval))


def _versus_full(adapter: pd.DataFrame, full: list[float], ranks, rule) -> tuple[list[str], list[bool]]:
    lines, verdicts = [], []
    for rank in ranks:
        cell = adapter[adapter["rank"] == rank].iloc[0]
        diff, interval = _difference(cell["test_values"], full)
        verdicts.append(rule(diff, interval))
        lines.append(f"r={rank}: {cell['mean']:.2f} (n={len(cell['test_values'])}, lr {cell['lr']:g}) vs full FT "
                     f"{np.mean(full):.2f}: {_fmt(diff, interval)} -> {'yes' if verdicts[-1] else 'no'}")
    return lines, verdicts


def judge(full: list[float], adapters: pd.DataFrame) -> list[dict]:
    """The three claims on one setting and view: full FT's test values, and the adapters' cells
    (columns: method, rank, test_values, mean, lr)."""
    lora, qlora = (adapters[adapters["method"] == m] for m in ("lora", "qlora"))
    out = []

    ranks = sorted(int(r) for r in lora["rank"] if int(r) in LOW_RANKS)
    claim = {"claim": "LoRA competitive at ranks 8 or 16",
             "rule": f"at each of ranks {LOW_RANKS} run: LoRA mean >= full FT mean - {TOLERANCE:g} points, "
                     "or the 95% bootstrap interval of the difference holds 0"}
    if not ranks or not full:
        claim.update(verdict="not testable", evidence=["no LoRA run at rank 8 or 16, or no full FT"])
    else:
        lines, verdicts = _versus_full(lora, full, ranks, competitive)
        claim.update(verdict="held" if all(verdicts) else "not held", evidence=lines)
    out.append(claim)

    ranks = sorted(int(r) for r in qlora["rank"] if QLORA_RANGE[0] <= int(r) <= QLORA_RANGE[1])
    claim = {"claim": "QLoRA similar to full fine-tuning",
             "rule": f"at each QLoRA rank from {QLORA_RANGE[0]} to {QLORA_RANGE[1]} run: |difference| <= "
                     f"{TOLERANCE:g} points, or its 95% bootstrap interval holds 0"}
    if not ranks or not full:
        claim.update(verdict="not testable", evidence=["no QLoRA run at ranks 8-256, or no full FT"])
    else:
        lines, verdicts = _versus_full(qlora, full, ranks, similar)
        claim.update(verdict="held" if all(verdicts) else "not held", evidence=lines)
    out.append(claim)

    out.append(diminishing(qlora, "QLoRA gains diminish beyond some rank (the seed: beyond 256)"))
    return out


def diminishing(adapter: pd.DataFrame, name: str) -> dict:
    claim = {"claim": name,
             "rule": f"some rank r* <= {QLORA_RANGE[1]}, below the largest rank run, from which no step to the "
                     "next rank run gains beyond noise (the 95% bootstrap interval of mean(next) - mean(this) "
                     "above 0); r* is the smallest such rank"}
    steps = adapter.sort_values("rank")
    ranks = [int(r) for r in steps["rank"]]
    if len(ranks) < 2:
        claim.update(verdict="not testable", evidence=["fewer than two ranks run"])
        return claim
    lines, gains = [], []
    for (_, low), (_, high) in zip(steps.iloc[:-1].iterrows(), steps.iloc[1:].iterrows()):
        diff, interval = _difference(high["test_values"], low["test_values"])
        gains.append(interval[0] > 0 if not math.isnan(interval[0]) else False)
        lines.append(f"r={int(low['rank'])} -> r={int(high['rank'])}: {_fmt(diff, interval)}"
                     f" -> {'gain beyond noise' if gains[-1] else 'within noise or a loss'}")
    # r* = the rank after the last step that still gains beyond noise (the smallest rank if none does).
    last_gain = max((i for i, g in enumerate(gains) if g), default=-1)
    flat_from = ranks[last_gain + 1]
    held = flat_from <= QLORA_RANGE[1] and flat_from < ranks[-1]
    lines.append(f"r* = {flat_from}" + ("" if held else " (no flat stretch at or below 256 within the ranks run)"))
    if ranks[-1] <= QLORA_RANGE[1]:
        lines.append(f"ranks above {ranks[-1]} were not run: nothing here says what happens beyond it")
    claim.update(verdict="held" if held else "not held", evidence=lines)
    return claim


def judge_all(cells: pd.DataFrame, shared: list[str], specific: list[str]) -> list[dict]:
    """Every claim for every (setting, view); adapter variants other than the conventions (e.g. two
    target sets) are judged apart, against the same full FT."""
    out = []
    if not len(cells):
        return out
    variants = [k for k in specific if k not in DEFAULT_CONVENTION and k != "config.method.alpha"]
    cells = default_convention(cells)
    for group, here in cells.groupby(shared + ["view"], dropna=False, sort=True):
        setting = " / ".join(str(v) for v in group[:-1])
        full = here[here["method"] == "full"]
        reference = full.iloc[0]["test_values"] if len(full) else []
        adapters = here[here["method"] != "full"]
        for variant, subset in (adapters.groupby(variants, dropna=False, sort=True) if variants
                                else [((), adapters)]):
            values = variant if isinstance(variant, tuple) else (variant,)
            name = setting + "".join(f" / {k.split('.')[-1]}={v}" for k, v in zip(variants, values))
            for claim in judge(reference, subset):
                out.append({"setting": name, "view": group[-1], **claim})
    return out


def markdown(judged: list[dict]) -> str:
    if not judged:
        return "(no runs to judge the claims on)"
    lines = []
    for view in ("tuned", "default"):
        here = [c for c in judged if c["view"] == view]
        if not here:
            continue
        title = "the learning rate chosen on validation" if view == "tuned" else "each method's default learning rate"
        lines += [f"**At {title}:**", ""]
        for claim in here:
            lines.append(f"- **{claim['claim']}** ({claim['setting']}): **{claim['verdict']}**. Rule: {claim['rule']}.")
            lines += [f"    - {e}" for e in claim["evidence"]]
        lines.append("")
    return "\n".join(lines).rstrip()


def to_frame(judged: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**c, "evidence": " | ".join(c["evidence"])} for c in judged])
