"""The bf16-vs-fp32 comparison (analysis.precision) on real runs: pairs per method and seed, a
difference paired on the evaluated rows, Holm across the methods, and the default's verdict."""

import pytest

from analysis import precision
from analysis.collect import read_results
from analysis.rules import EQUIVALENCE
from conftest import TINY_TRAINER, compose_run
from lab.decisions import cpu_bf16_supported
from lab.train import run


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    base = ["model=tiny-bert", "dataset=synthetic-cls", *TINY_TRAINER]
    # tests/test_core_runs.py's rates, at which these tiny runs learn; full FT at one seed.
    methods = {"full": ["method.learning_rate=2e-3"], "lora": ["rank=4", "method.learning_rate=5e-3"]}
    jobs = [[*base, f"method={method}", *methods[method], f"seed={seed}", f"trainer.precision={p}"]
            for method, seeds in (("full", (0,)), ("lora", (0, 1))) for seed in seeds for p in precision.PRECISIONS]
    for job in jobs:
        run(compose_run(job, results=results))
    return read_results(str(results))[0]  # as the command reads them: each with its folder, for its rows


@pytest.mark.skipif(not cpu_bf16_supported(), reason="bf16 autocast needs a CPU with bf16 instructions")
def test_runs_pair_by_method_and_seed_and_differences_pair_on_rows(records):
    by_method, left_out = precision.pairs(records)
    assert not left_out and set(by_method) == {"full", "lora"}
    result = precision.compare(by_method)
    for method, judged in result["methods"].items():
        assert [r["seed"] for r in judged["rows"]] == ([0] if method == "full" else [0, 1])
        validation = judged["validation"]
        assert validation.test == EQUIVALENCE and validation.family == 2  # Holm across the two methods
        diffs = [r["validation_accuracy_bf16"] - r["validation_accuracy_fp32"] for r in judged["rows"]]
        assert validation.comparison.value == pytest.approx(sum(diffs) / len(diffs))
    # Both precisions kept their per-row outputs: paired on the rows as well as the seeds.
    assert result["methods"]["lora"]["validation"].comparison.method.startswith("two-level bootstrap, 2 paired seeds")
    assert result["methods"]["full"]["validation"].comparison.method.startswith("one seed: McNemar exact")
    text = precision.markdown(result, left_out, "test")
    assert text.count("| full |") == 1 and text.count("| lora |") == 2
    assert ("can be the default" in text) == result["equivalent"]


def test_the_records_say_which_precision_ran(records):
    ran = {r["precision"] for r in records}
    assert ran == ({"fp32", "bf16"} if cpu_bf16_supported() else {"fp32"})
