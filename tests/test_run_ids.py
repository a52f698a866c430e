"""Run ids are a user-visible contract: a rerun finds its record by id, so a refactor must not move them.

`golden_run_ids.json` was written before the package was restructured, from ~20 representative
configs (every method, scaling and quantization variant, each shipped model and dataset family, a
local file, non-semantic trainer keys, epochs). An intended change of the id rule updates the file
in the same commit and says why.

Changed on purpose (issue 21): the local-file case. A file's run id hashes the file's bytes (their
SHA-256) in place of its path string, so an edited file is never skipped as "finished earlier"; the
case now names tests/data/reviews.csv (`{tests}` is this folder), whose bytes the id is pinned to.
Every id of a non-file dataset is unchanged.
"""

import json
from pathlib import Path

import pytest

from conftest import compose_run
from lab.config import validate
from lab.record import run_id

GOLDEN = json.loads((Path(__file__).parent / "golden_run_ids.json").read_text())


@pytest.mark.parametrize("case", GOLDEN, ids=[c["run_id"] for c in GOLDEN])
def test_run_id_unchanged(case):
    overrides = [o.replace("{tests}", str(Path(__file__).parent)) for o in case["overrides"]]
    assert run_id(validate(compose_run(overrides))) == case["run_id"]
