"""The per-row outputs file: stable ids, an atomic write with its hash, read back aligned by row id."""

import pandas as pd
import pytest

from lab import rows


def test_row_ids_depend_on_the_text_and_count_repeats():
    first = rows.row_ids(["a good film", "a bad film", "a good film"])
    assert first[0] != first[1]
    assert first[2] == first[0] + "#1"
    assert rows.row_ids(["a bad film"]) == [first[1]]  # the id does not depend on the position


def test_written_rows_read_back_with_their_hash(tmp_path):
    texts = ["one", "two", "three"]
    frame = pd.DataFrame({"split": ["validation", "test", "test"], "row_id": rows.row_ids(texts),
                          "gold": [0, 1, 1], "pred": [0, 0, 1], "p_gold": [0.9, 0.2, 0.7],
                          "correct": [True, False, True]})
    kept = rows.write_rows(str(tmp_path), frame)
    assert kept["rows"] == {"validation": 1, "test": 2}
    assert kept["sha256"] == rows.file_sha256(str(tmp_path / rows.ROWS_FILE))
    test = rows.read_rows(str(tmp_path), "test")
    assert list(test.index) == rows.row_ids(texts)[1:]
    assert test["correct"].tolist() == [False, True]
    assert not list(tmp_path.glob(".tmp-*"))
    assert rows.read_rows(str(tmp_path / "missing")) is None
    # As readable as the record beside it (a temporary file is private until it is renamed into place).
    (tmp_path / "plain").write_text("")
    assert (tmp_path / rows.ROWS_FILE).stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_rows_without_the_columns_of_a_task_are_refused(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        rows.write_rows(str(tmp_path), pd.DataFrame({"split": ["test"], "row_id": ["x"]}))
