"""The seed document's accuracy claims, each judged on a sweep's cells by the decision rules
(analysis.rules: a declared margin, equivalence / non-inferiority / superiority, Holm's correction
within each claim), on the runs that learned, at each cell's validation-chosen learning rate. Every
difference is paired on rows and seeds where the records kept per-row outputs (analysis.stats).

1. "Even at low ranks (8 or 16) LoRA performs competitively": at each of ranks 8 and 16 run, LoRA vs
   full FT is non-inferior at the margin.
2. "QLoRA maintains similar performance to full fine-tuning": at each QLoRA rank from 8 to 256 run,
   QLoRA vs full FT is equivalent within the margin.
3. "QLoRA gains diminish beyond 256": a gain shown from the lowest rank run up to 256 and every rank
   run above 256 equivalent to 256. A sweep that ran nothing above 256 cannot test it.
4. "QLoRA gains diminish beyond some rank r* run": the smallest r* with a gain shown over the lowest rank
   run and every rank run above it equivalent to it. No gain shown is never taken for a plateau.

A claim is "held" only on positive evidence: every deciding comparison passes its test after Holm.
It is "not held" when one is shown the other way, "inconclusive" otherwise; it is judged only where
every deciding cell has at least MIN_SEEDS runs that learned ("not enough seeds" otherwise), and
"not testable" where the ranks it speaks of were not run.
"""

from __future__ import annotations

from analysis.cells import Cell, difference_bounds, find
from analysis.rules import EQUIVALENCE, NON_INFERIORITY, SUPERIORITY, Judged, Rules

MIN_SEEDS = 5
LOW_RANKS = (8, 16)
QLORA_RANGE = (8, 256)
SEED_PLATEAU = 256


def judge(cells: list[Cell], rules: Rules | None = None) -> list[dict]:
    rules = rules or Rules()
    full = find(cells, "full")
    return [lora_competitive(cells, full, rules), qlora_similar(cells, full, rules),
            gains_diminish_beyond(cells, SEED_PLATEAU, rules), gains_diminish(cells, rules)]


def _shortfall(deciding: list[Cell]) -> str | None:
    short = [f"{c.label} (n={len(c.scores())})" for c in deciding if len(c.scores()) < MIN_SEEDS]
    return f"not enough seeds: {', '.join(short)} below {MIN_SEEDS}" if short else None


def _line(label: str, judged: Judged, rules: Rules, metric: str) -> str:
    return f"{label}: {rules.evidence(judged, difference_bounds(metric))}"


def _overall(verdicts: list[str], good: str, bad: str) -> str:
    if all(v == good for v in verdicts):
        return "held"
    return "not held" if any(v == bad for v in verdicts) else "inconclusive"


def _against_full(claim: dict, adapters: list[Cell], full: Cell | None, test: str, rules: Rules) -> dict:
    if not adapters or full is None:
        return {**claim, "verdict": "not testable", "evidence": ["no deciding cell, or no full fine-tuning"]}
    short = _shortfall(adapters + [full])
    if short:
        return {**claim, "verdict": "not enough seeds", "evidence": [short]}
    judged = rules.family([c.compare(full) for c in adapters], test)
    lines = [_line(f"{c.label} (lr {c.lr:g}) − {full.label} (lr {full.lr:g})", j, rules, full.metric)
             for c, j in zip(adapters, judged)]
    good, bad = ("competitive", "worse") if test == NON_INFERIORITY else ("similar", "different")
    return {**claim, "verdict": _overall([j.verdict for j in judged], good, bad), "evidence": lines}


def lora_competitive(cells: list[Cell], full: Cell | None, rules: Rules) -> dict:
    lora = [c for c in cells if c.method == "lora" and c.rank in LOW_RANKS and c.lr is not None]
    claim = {"claim": "LoRA competitive at ranks 8 or 16",
             "rule": f"at each LoRA rank of {LOW_RANKS} run: LoRA − full FT non-inferior at "
                     f"−{rules.margin:g} {rules.unit} "
                     f"(one-sided 95% lower bound above −{rules.margin:g}), Holm across the ranks"}
    return _against_full(claim, lora, full, NON_INFERIORITY, rules)


def qlora_similar(cells: list[Cell], full: Cell | None, rules: Rules) -> dict:
    qlora = [c for c in cells if c.method == "qlora" and QLORA_RANGE[0] <= c.rank <= QLORA_RANGE[1]
             and c.lr is not None]
    claim = {"claim": "QLoRA similar to full fine-tuning",
             "rule": f"at each QLoRA rank from {QLORA_RANGE[0]} to {QLORA_RANGE[1]} run: QLoRA − full FT equivalent "
                     f"within ±{rules.margin:g} {rules.unit} (TOST: the 90% interval inside the margin), "
                     "Holm across the ranks"}
    return _against_full(claim, qlora, full, EQUIVALENCE, rules)


def _ladder(cells: list[Cell], method: str) -> list[Cell]:
    return [c for c in cells if c.method == method and c.lr is not None]


def _gains(ladder: list[Cell], rules: Rules) -> list[Judged]:
    """Each rank above the lowest tested for a gain over the lowest (superiority), Holm across them:
    the way up to a rank gains when it beats the ladder's foot, however noisy the steps between."""
    return rules.family([high.compare(ladder[0]) for high in ladder[1:]], SUPERIORITY)


def _plateau(ladder: list[Cell], at: int, gains: list[Judged], rules: Rules) -> tuple[str, list[str]]:
    """Whether gains diminish beyond rank `at`: a gain shown from the ladder's foot up to it, and every
    rank run above it equivalent to it (TOST, Holm across those)."""
    index = next(i for i, c in enumerate(ladder) if int(c.rank) == at)
    above = ladder[index + 1:]
    gain_below = index > 0 and gains[index - 1].verdict == "gain"
    judged = rules.family([c.compare(ladder[index]) for c in above], EQUIVALENCE)
    lines = [_line(f"r={int(c.rank)} − r={at}", j, rules, c.metric) for c, j in zip(above, judged)]
    if gain_below and all(j.verdict == "similar" for j in judged):
        return "held", lines
    if not gain_below:
        return "inconclusive", lines + [f"no gain shown up to r={at}: a plateau needs a gain before it"]
    return ("not held" if any(j.verdict == "different" for j in judged) else "inconclusive"), lines


def _gain_lines(ladder: list[Cell], gains: list[Judged], rules: Rules) -> list[str]:
    return [_line(f"r={int(high.rank)} − r={int(ladder[0].rank)}", j, rules, high.metric)
            for high, j in zip(ladder[1:], gains)]


def gains_diminish_beyond(cells: list[Cell], at: int, rules: Rules, method: str = "qlora") -> dict:
    ladder = _ladder(cells, method)
    claim = {"claim": f"QLoRA gains diminish beyond r={at} (the seed's rank)",
             "rule": f"a gain shown from the lowest rank run up to r={at} (superiority, Holm across the ranks), "
                     f"and every rank run above r={at} equivalent to it within ±{rules.margin:g} (TOST, Holm)"}
    ranks = [int(c.rank) for c in ladder]
    if at not in ranks or not any(r > at for r in ranks) or ranks[0] == at:
        return {**claim, "verdict": "not testable",
                "evidence": [f"ranks run: {ranks or 'none'}; the claim needs r={at}, a rank below it and one above it"]}
    short = _shortfall(ladder)
    if short:
        return {**claim, "verdict": "not enough seeds", "evidence": [short]}
    gains = _gains(ladder, rules)
    verdict, lines = _plateau(ladder, at, gains, rules)
    return {**claim, "verdict": verdict, "evidence": _gain_lines(ladder, gains, rules) + lines}


def gains_diminish(cells: list[Cell], rules: Rules | None = None, method: str = "qlora") -> dict:
    rules = rules or Rules()
    ladder = _ladder(cells, method)
    claim = {"claim": "QLoRA gains diminish beyond some rank r* run",
             "rule": "the smallest rank r* run with a gain shown over the lowest rank run (superiority, Holm across "
                     f"the ranks) and every rank run above it equivalent to it within ±{rules.margin:g} (TOST, Holm)"}
    if len(ladder) < 3:
        return {**claim, "verdict": "not testable", "evidence": ["fewer than three ranks run"]}
    short = _shortfall(ladder)
    if short:
        return {**claim, "verdict": "not enough seeds", "evidence": [short]}
    gains = _gains(ladder, rules)
    lines = _gain_lines(ladder, gains, rules)
    first_gain = []  # the plateau tested at the first rank a gain was shown up to: what stood in the way
    for cell, gain in zip(ladder[1:-1], gains):
        verdict, plateau = _plateau(ladder, int(cell.rank), gains, rules)
        if verdict == "held":
            return {**claim, "verdict": "held", "evidence": lines + plateau + [
                f"r* = {int(cell.rank)}; ranks above {int(ladder[-1].rank)} were not run: not testable there"]}
        first_gain = first_gain or (plateau if gain.verdict == "gain" else [])
    return {**claim, "verdict": "inconclusive",
            "evidence": lines + first_gain
            + ["no rank run has both a gain shown up to it and equivalence to it above it"]}
