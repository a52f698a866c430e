"""The seed document's accuracy claims, each judged on a sweep's cells with a named test.

Every difference is a t test over seeds (paired when both cells ran the same seeds, else Welch;
analysis.stats), on the runs that learned, at each cell's validation-chosen learning rate. A margin
of MARGIN points of accuracy decides what "competitive" and "similar" mean, and the 95 % interval of
the difference must settle it:

1. "Even at low ranks (8 or 16) LoRA performs competitively": at each of ranks 8 and 16 run, LoRA -
   full FT has its interval above -MARGIN (competitive), below it (worse), or across it (inconclusive).
2. "QLoRA maintains similar performance to full fine-tuning": at each QLoRA rank from 8 to 256 run,
   the interval inside [-MARGIN, +MARGIN] (similar), outside it (different), or across (inconclusive).
3. "QLoRA is effective with ranks between 8 and 256; beyond that gains diminish": each step to the
   next rank run is a gain when its interval lies above 0; held when from some rank r* <= 256, below
   the largest rank run, no step gains (and a sweep that stops at 256 cannot see beyond it).

A claim is judged only where every deciding cell has at least MIN_SEEDS runs that learned; otherwise
its verdict is "not enough seeds" with the cell that lacks them.
"""

from __future__ import annotations

from analysis import stats
from analysis.cells import Cell, find

MARGIN = 1.0
MIN_SEEDS = 5
LOW_RANKS = (8, 16)
QLORA_RANGE = (8, 256)


def judge(cells: list[Cell]) -> list[dict]:
    full = find(cells, "full")
    return [lora_competitive(cells, full), qlora_similar(cells, full), gains_diminish(cells)]


def _shortfall(deciding: list[Cell]) -> str | None:
    short = [f"{c.label} (n={len(c.scores())})" for c in deciding if len(c.scores()) < MIN_SEEDS]
    return f"not enough seeds: {', '.join(short)} below {MIN_SEEDS}" if short else None


def _versus(cell: Cell, reference: Cell, verdict_of) -> tuple[str, str]:
    diff = stats.difference(cell.scores(), reference.scores())
    verdict = verdict_of(diff)
    p = "" if diff.p is None else f", p = {diff.p:.3f}"
    return verdict, (f"{cell.label} (lr {cell.lr:g}) - {reference.label} (lr {reference.lr:g}): "
                     f"{diff.text(signed=True)} points, {diff.method}{p} -> {verdict}")


def _competitive(diff: stats.Estimate) -> str:
    if diff.holds_zero is None:
        return "untested"
    return "competitive" if diff.low >= -MARGIN else "worse" if diff.high < -MARGIN else "inconclusive"


def _similar(diff: stats.Estimate) -> str:
    if diff.holds_zero is None:
        return "untested"
    if -MARGIN <= diff.low and diff.high <= MARGIN:
        return "similar"
    return "different" if diff.high < -MARGIN or diff.low > MARGIN else "inconclusive"


def _overall(verdicts: list[str], good: str, bad: str) -> str:
    if all(v == good for v in verdicts):
        return "held"
    return "not held" if any(v == bad for v in verdicts) else "inconclusive"


def _against_full(name: str, rule: str, adapters: list[Cell], full: Cell | None, good: str, bad: str,
                  verdict_of) -> dict:
    claim = {"claim": name, "rule": rule}
    if not adapters or full is None:
        return {**claim, "verdict": "not testable", "evidence": ["no deciding cell, or no full fine-tuning"]}
    short = _shortfall(adapters + [full])
    if short:
        return {**claim, "verdict": "not enough seeds", "evidence": [short]}
    verdicts, lines = zip(*(_versus(cell, full, verdict_of) for cell in adapters))
    return {**claim, "verdict": _overall(list(verdicts), good, bad), "evidence": list(lines)}


def lora_competitive(cells: list[Cell], full: Cell | None) -> dict:
    lora = [c for c in cells if c.method == "lora" and c.rank in LOW_RANKS and c.lr is not None]
    return _against_full(
        "LoRA competitive at ranks 8 or 16",
        f"at each LoRA rank of {LOW_RANKS} run: the 95% interval of LoRA - full FT lies above -{MARGIN:g} point",
        lora, full, "competitive", "worse", _competitive)


def qlora_similar(cells: list[Cell], full: Cell | None) -> dict:
    qlora = [c for c in cells if c.method == "qlora" and QLORA_RANGE[0] <= c.rank <= QLORA_RANGE[1]
             and c.lr is not None]
    return _against_full(
        "QLoRA similar to full fine-tuning",
        f"at each QLoRA rank from {QLORA_RANGE[0]} to {QLORA_RANGE[1]} run: the 95% interval of QLoRA - full "
        f"FT lies inside [-{MARGIN:g}, +{MARGIN:g}] points",
        qlora, full, "similar", "different", _similar)


def gains_diminish(cells: list[Cell], method: str = "qlora") -> dict:
    ladder = [c for c in cells if c.method == method and c.lr is not None]
    claim = {"claim": "QLoRA gains diminish beyond some rank (the seed: beyond 256)",
             "rule": f"from some rank r* <= {QLORA_RANGE[1]}, below the largest rank run, no step to the next rank "
                     "run is a gain (a gain: the 95% interval of mean(next) - mean(this) above 0)"}
    if len(ladder) < 2:
        return {**claim, "verdict": "not testable", "evidence": ["fewer than two ranks run"]}
    short = _shortfall(ladder)
    if short:
        return {**claim, "verdict": "not enough seeds", "evidence": [short]}
    lines, gains = [], []
    for low, high in zip(ladder, ladder[1:]):
        diff = stats.difference(high.scores(), low.scores())
        gains.append(diff.holds_zero is False and diff.low > 0)
        p = "" if diff.p is None else f", p = {diff.p:.3f}"
        lines.append(f"r={int(low.rank)} -> r={int(high.rank)}: {diff.text(signed=True)} points, {diff.method}{p} "
                     f"-> {'gain' if gains[-1] else 'no gain shown'}")
    ranks = [int(c.rank) for c in ladder]
    flat_from = ranks[max((i for i, g in enumerate(gains) if g), default=-1) + 1]
    held = flat_from <= QLORA_RANGE[1] and flat_from < ranks[-1]
    lines.append(f"r* = {flat_from}" + ("" if held else " (no stretch without gains at or below 256)"))
    lines.append("no gain shown is not evidence of no gain: the intervals say how large a gain could hide")
    if ranks[-1] <= QLORA_RANGE[1]:
        lines.append(f"ranks above {ranks[-1]} were not run: nothing here says what happens beyond it")
    return {**claim, "verdict": "held" if held else "not held", "evidence": lines}
