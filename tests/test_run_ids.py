"""Run ids are a user-visible contract: a rerun finds its record by id, so a refactor must not move them.

`golden_run_ids.json` was written before the package was restructured, from ~20 representative
configs (every method, scaling and quantization variant, each shipped model and dataset family, a
local file, non-semantic trainer keys, epochs). An intended change of the id rule updates the file
in the same commit and says why.
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
    assert run_id(validate(compose_run(case["overrides"]))) == case["run_id"]
