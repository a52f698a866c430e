"""The seed document's claims, each with its rule, its test, its numbers and its verdict."""

from __future__ import annotations

import pandas as pd

from analysis import claims
from analysis.cells import Cell
from analysis.document import Section


def section(cells: list[Cell]) -> tuple[Section, pd.DataFrame]:
    judged = claims.judge(cells)
    out = Section("The seed's claims")
    out.text(f"Judged on the cells above (runs that learned, chosen learning rates), with a margin of "
             f"{claims.MARGIN:g} point of accuracy and at least {claims.MIN_SEEDS} seeds per deciding cell. "
             "Verdicts: held, not held, inconclusive (the interval crosses the margin), not enough seeds, "
             "not testable.")
    lines = []
    for claim in judged:
        lines.append(f"- **{claim['claim']}: {claim['verdict']}.** Rule: {claim['rule']}.")
        lines += [f"    - {e}" for e in claim["evidence"]]
    out.text("\n".join(lines))
    frame = pd.DataFrame([{**c, "evidence": " | ".join(c["evidence"])} for c in judged])
    return out, frame
