"""Bad input fails before training with one clear line naming the key, the value and what is allowed."""

import subprocess
import sys

import pytest

from conftest import ROOT, compose_run
from lab.config import ConfigError, validate


@pytest.mark.parametrize("overrides,key", [
    (["rank=0"], "rank"),
    (["rank=-4"], "rank"),
    (["rank=2.5"], "rank"),
    (["rank=abc"], "rank"),
    (["method=full", "rank=8"], "rank"),
    (["method.dropout=1.0"], "method.dropout"),
    (["method.alpha=0"], "method.alpha"),
    (["method.targets=nonsense"], "method.targets"),
    (["method=qlora", "method.quant.type=int3"], "method.quant.type"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["trainer.precision=fp8"], "trainer.precision"),
    (["trainer.max_grad_norm=-1"], "trainer.max_grad_norm"),
    (["seed=1.5"], "seed"),
    (["device=tpu"], "device"),
    (["dataset=synthetic-lm"], "dataset"),
    (["trainer.batch_size=abc"], "trainer.batch_size"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["trainer.learning_rate=-1"], "trainer.learning_rate"),
    (["model.max_length=0"], "model.max_length"),
    (["dataset.sizes.train=0"], "dataset.sizes.train"),
    (["method.bias=some"], "method.bias"),
    (["method=qlora", "method.quant.compute_dtype=int8"], "method.quant.compute_dtype"),
    (["method.targets=[]"], "method.targets"),
])
def test_invalid_values_name_key_value_and_allowed(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_run(overrides))
    assert err.value.key == key
    assert "allowed:" in str(err.value)


def test_results_path_not_writable(tmp_path):
    from lab.config import check_results_writable

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="paths.results"):
        check_results_writable(str(blocker / "results"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,expect", [
    (["method=bogus"], "method/bogus"),
    (["model=bogus"], "model/bogus"),
    (["dataset=bogus"], "dataset/bogus"),
    (["rank=0"], "rank=0"),
    (["method=full", "rank=4"], "no rank with method=full"),
    (["trainer.lr=1"], "trainer.lr"),
])
def test_cli_reports_one_clear_error_not_a_traceback(args, expect):
    proc = _cli(*args, "logger=none")
    assert proc.returncode != 0
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    prose = [line for line in proc.stderr.strip().splitlines() if not line.startswith("\t")]
    assert len(prose) <= 8  # tab-indented lines are Hydra's list of the available options


def test_validation_happens_before_torch_is_imported():
    # Why a config error costs well under a second: nothing heavy is imported before validation.
    code = ("import sys; from lab import train; from lab.config import validate; sys.path.insert(0, 'tests'); "
            "from conftest import compose_run; validate(compose_run(['method=qlora'])); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


@pytest.mark.parametrize("args,expect", [
    (["rank=128"], "rank=128; allowed: at most 64"),
    (["method=qlora", "model.head_modules=[bert,classifier]"], "method='qlora'"),
])
def test_errors_that_need_the_model_structure_fail_before_training(tmp_path, args, expect):
    proc = _cli(*args, "model=tiny-bert", "dataset=synthetic-cls", "logger=none", f"paths.results={tmp_path}")
    assert proc.returncode == 2 and expect in proc.stderr, proc.stderr[-1500:]
    assert not list(tmp_path.rglob("result.json"))


def test_unknown_target_module_is_caught_when_the_model_is_known(tmp_path):
    proc = _cli("method.targets=[query,not_a_layer]", "model=tiny-bert", "dataset=synthetic-cls", "logger=none",
                f"paths.results={tmp_path}")
    assert proc.returncode == 2
    assert "method.targets='not_a_layer'" in proc.stderr and "allowed:" in proc.stderr
    assert "query" in proc.stderr  # the names that do exist are listed
    assert not list(tmp_path.rglob("result.json"))
