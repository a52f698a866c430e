"""The seed document's claims, each with its rule, its test, its numbers and its verdict."""

from __future__ import annotations

import pandas as pd

from analysis import claims
from analysis.cells import Cell
from analysis.document import Section
from analysis.rules import Rules


def section(cells: list[Cell], rules: Rules) -> tuple[Section, pd.DataFrame]:
    judged = claims.judge(cells, rules)
    out = Section("The seed's claims")
    out.text(f"Judged on the cells above (runs that learned, chosen learning rates) at least {claims.MIN_SEEDS} "
             f"seeds per deciding cell, by the rules of the setup block: {rules.describe()}. A claim is held only "
             "when every deciding test passes after Holm's correction within the claim; not held when one is shown "
             "the other way (the 95% interval wholly past the margin); inconclusive otherwise; not testable where "
             "the ranks it speaks of were not run. Each interval says what it answers: another training seed "
             "(seed-paired t, for records without per-row outputs) or another training seed and another test "
             "sample (the two-level bootstrap over paired seeds and shared test rows).")
    lines = []
    for claim in judged:
        lines.append(f"- **{claim['claim']}: {claim['verdict']}.** Rule: {claim['rule']}.")
        lines += [f"    - {e}" for e in claim["evidence"]]
    out.text("\n".join(lines))
    frame = pd.DataFrame([{**c, "evidence": " | ".join(c["evidence"])} for c in judged])
    return out, frame
