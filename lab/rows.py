"""Per-row outputs of a run: one Parquet file beside its record, keyed by a stable row id.

Every run scores the same validation and test rows, so two runs can be compared row by row (a paired
bootstrap over rows and seeds, McNemar's test for one seed) only if each keeps what it predicted for
each row. This module owns that file: its name, its columns, how a row id is made, writing it
atomically with its hash (which the record and the W&B artifact carry) and reading it back.

Columns (one row per evaluated example and split):
- `split`: "validation" or "test"; `row_id`: see `row_ids`;
- classification: `gold` (label index), `pred` (predicted index), `p_gold` (the probability the model
  gave the gold label), `correct` (pred == gold);
- language modelling: `loss` (mean token cross-entropy of the row), `tokens` (the tokens it was taken over).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable

import pandas as pd

from lab.paths import atomic_file, file_sha256

ROWS_FILE = "rows.parquet"
SPLITS = ("validation", "test")
CLASSIFICATION_COLUMNS = ("split", "row_id", "gold", "pred", "p_gold", "correct")
LM_COLUMNS = ("split", "row_id", "loss", "tokens")
_ID_HEX = 16


def row_ids(texts: Iterable[str]) -> list[str]:
    """A stable id per row: the first 64 bits of the SHA-256 of its text, `#k` on its k-th repeat.

    The id depends on the text alone (not the row's position or the run), so two runs on one split
    align whatever order they evaluated in, and a repeated sentence stays two rows.
    """
    seen: Counter = Counter()
    out = []
    for text in texts:
        digest = hashlib.sha256(str(text).encode("utf-8")).hexdigest()[:_ID_HEX]
        out.append(digest if not seen[digest] else f"{digest}#{seen[digest]}")
        seen[digest] += 1
    return out


def _columns_for(frame: pd.DataFrame) -> tuple[str, ...]:
    for columns in (CLASSIFICATION_COLUMNS, LM_COLUMNS):
        if set(columns) <= set(frame.columns):
            return columns
    raise ValueError(f"per-row outputs need the columns {CLASSIFICATION_COLUMNS} or {LM_COLUMNS}; "
                     f"got {tuple(frame.columns)}")


def write_rows(run_dir: str, frame: pd.DataFrame) -> dict:
    """Write `frame` as `<run_dir>/rows.parquet` atomically; return what the record keeps of it.

    The returned dict (`file`, `sha256`, `rows` per split) goes into the record's `rows` field.
    """
    columns = _columns_for(frame)
    bad = set(frame["split"]) - set(SPLITS)
    if bad:
        raise ValueError(f"per-row outputs: unknown split(s) {sorted(bad)}; allowed: {SPLITS}")
    table = frame.loc[:, list(columns)].reset_index(drop=True)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, ROWS_FILE)
    with atomic_file(path) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["split"].value_counts()
    return {"file": ROWS_FILE, "sha256": file_sha256(path),
            "rows": {split: int(counts.get(split, 0)) for split in SPLITS}}


def read_rows(run_dir: str, split: str | None = None) -> pd.DataFrame | None:
    """The run's per-row outputs (of one split if given), indexed by row id; None if it kept none."""
    path = os.path.join(run_dir, ROWS_FILE)
    if not os.path.exists(path):
        return None
    frame = pd.read_parquet(path)
    if split is not None:
        frame = frame[frame["split"] == split]
    return frame.set_index("row_id")
