"""Methods as data (conf/method/<name>.yaml): every shipped method trains a few steps on a tiny model and
is counted exactly, whatever its adapter names its parameters; a 4-bit base takes the adapters peft has
4-bit layers for and refuses the rest by name; a method file the suite does not ship runs end to end."""

import pytest
import torch

from conftest import compose_run
from lab import methods, models
from lab.config import ConfigError, validate
from lab.memory.activations import method_gap
from lab.memory.compare import ACTIVATION_TOLERANCE, compare
from lab.train import run

TINY = {"tiny-bert": ["model=tiny-bert", "dataset=synthetic-cls"],
        "tiny-llama": ["model=tiny-llama", "dataset=synthetic-lm"]}
SHORT = ["trainer.max_steps=6", "trainer.batch_size=16", "trainer.logging_steps=2", "dataset.sizes.train=96",
         "dataset.sizes.validation=32", "dataset.sizes.test=32", "logger=none"]
# AdaLoRA's schedule within six steps: one warm-up step, reallocation every step, two final steps.
ADALORA_SHORT = ["method.peft.tinit=1", "method.peft.tfinal=2", "method.peft.deltaT=1"]
# (method file, model, extra overrides): each shipped adapter on a model it fits.
SHIPPED = [
    ("lora", "tiny-bert", []), ("rslora", "tiny-bert", []), ("pissa", "tiny-bert", []), ("olora", "tiny-bert", []),
    ("dora", "tiny-llama", []), ("adalora", "tiny-bert", ADALORA_SHORT), ("ia3", "tiny-bert", []),
    ("ia3", "tiny-llama", []), ("loha", "tiny-bert", []), ("lokr", "tiny-llama", []), ("vera", "tiny-bert", ["rank=16"]),
    ("oft", "tiny-bert", ["rank=16"]), ("prompt_tuning", "tiny-bert", ["rank=4"]),
    ("prompt_tuning", "tiny-llama", ["rank=4"]), ("ln_tuning", "tiny-llama", []),
    ("ln_tuning", "tiny-bert", ["method.targets=[LayerNorm]"]),
]


def _peft_model(cfg):
    model = models.load_model(models.checkpoint_path(cfg.model, cfg.paths.cache), cfg.model, torch.float32, None,
                              cfg.dataset.num_labels if cfg.model.task == "cls" else None, "cpu")
    return methods.apply_method(model, cfg, "cpu")


@pytest.mark.parametrize("method,model,extra", SHIPPED, ids=[f"{m}-{model}" for m, model, _ in SHIPPED])
def test_shipped_method_trains_and_is_counted_exactly(method, model, extra, tmp_path):
    record = run(compose_run([f"method={method}", *TINY[model], *SHORT, *extra], results=tmp_path))
    assert record["status"] == "ok", record.get("error")
    assert record["run_id"].startswith(f"{method}-")
    cfg = validate(compose_run([f"method={method}", *TINY[model], *SHORT, *extra]))
    peft_model = _peft_model(cfg)
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert (record["params"]["trainable"], record["params"]["total"]) == (trainable, total)
    # The adapter: every trainable parameter outside the heads' ModulesToSaveWrapper, whatever its name.
    in_wrappers = {id(p) for m in peft_model.modules() if isinstance(m, methods.ModulesToSaveWrapper)
                   for p in m.parameters()}
    own = sum(p.numel() for p in peft_model.parameters() if p.requires_grad and id(p) not in in_wrappers)
    assert record["params"]["adapter"] == own > 0
    assert record["checks"]["frozen_base_unchanged"] is True
    if method != "prompt_tuning":
        assert record["checks"]["merge_max_abs_logit_diff"] < 1e-3
    assert record["timing"]["train_steps"] == 6
    # Accounting: weights, gradients and optimizer state estimated exactly for every method; saved
    # activations by the formula where it covers the method, else a gap named beside the measured ledger.
    row = compare(record)
    assert row["weights+gradients+optimizer error"] == 0
    gap = method_gap(cfg.method)
    assert record["memory"]["activations"] > 0
    if gap is None:
        assert row["estimate_error"] is None and abs(row["activations error"]) <= ACTIVATION_TOLERANCE
    else:
        assert method in row["estimate_error"] or "DoRA" in row["estimate_error"]


def test_adapter_counts_do_not_depend_on_names():
    """VeRA's vera_lambda_*, LoHa's hada_w*, IA3's ia3_l: counted; the classifier and pooler are not."""
    for method in ("vera", "loha", "ia3"):
        cfg = validate(compose_run([f"method={method}", *TINY["tiny-bert"], "rank=4" if method != "ia3" else "rank=null"]))
        peft_model = _peft_model(cfg)
        names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "modules_to_save" not in n
                 and "classifier" not in n and "pooler" not in n]
        assert names and not any("lora_" in n for n in names)
        assert methods.count_params(peft_model)["adapter"] == sum(
            p.numel() for n, p in peft_model.named_parameters() if n in names)


def test_adalora_budget_is_reallocated_by_peft(tmp_path):
    """peft's update_and_allocate ran: after the final phase some singular values are masked to zero."""
    from lab.recipe import FineTune

    cfg = validate(compose_run(["method=adalora", *TINY["tiny-bert"], *SHORT, *ADALORA_SHORT, "rank=4",
                                "method.peft.target_r=1"], results=tmp_path))
    job = FineTune(cfg, "cpu", "adalora-test")
    job.setup_data()
    job.setup_model()
    job.setup_trainer()
    job.train()
    budget = next(c for c in job.trainer.callback_handler.callbacks if type(c).__name__ == "AdaLoraBudget")
    assert budget.calls == 6
    ranks = [int((m.lora_E["default"] != 0).sum()) for m in job.model.modules() if hasattr(m, "lora_E")]
    assert ranks and sum(ranks) < 4 * len(ranks)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "adalora", "ln_tuning", "prompt_tuning"])
def test_adapters_with_4bit_layers_take_a_4bit_base(method):
    extra = ADALORA_SHORT if method == "adalora" else []
    cfg = validate(compose_run([f"method={method}", "base=4bit", *TINY["tiny-llama"], *extra]))
    model = models.load_model(models.checkpoint_path(cfg.model, cfg.paths.cache), cfg.model, torch.float32,
                              methods.quantization_config(cfg, "cpu", []), None, "cpu")
    peft_model = methods.apply_method(model, cfg, "cpu")
    assert any(type(m).__name__ == "Linear4bit" for m in peft_model.modules())
    assert methods.count_params(peft_model)["adapter"] > 0


@pytest.mark.parametrize("method", ["vera", "loha", "lokr", "oft", "pissa", "full"])
def test_4bit_base_refuses_what_peft_cannot_put_on_it(method):
    with pytest.raises(ConfigError) as err:
        validate(compose_run([f"method={method}", "base=4bit", *TINY["tiny-bert"]]))
    assert err.value.key == "base" and "lora" in str(err.value) and "ia3" in str(err.value)


@pytest.mark.parametrize("overrides,key", [
    (["method=ia3", "rank=4"], "rank"),
    (["method=vera", "rank=0"], "rank"),
    (["method=vera", "+method.alpha=8"], "method.alpha"),
    (["method=loha", "+method.dropout=0.1"], "method.dropout"),
    (["method=vera", "+method.peft.r=4"], "method.peft.r"),
    (["method=vera", "method.name=bad/name"], "method.name"),
    (["method=vera", "method.peft_type=vera"], "method.peft_type"),
])
def test_method_settings_name_key_value_and_allowed(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_run([*TINY["tiny-bert"], *overrides]))
    assert err.value.key == key and "allowed:" in str(err.value)


@pytest.mark.parametrize("overrides,key", [
    (["method=vera", "+method.peft.not_an_option=1"], "method.peft.not_an_option"),
    (["method=vera", "method.peft_type=NOT_A_TYPE"], "method.peft_type"),
    (["method=ln_tuning"], "method.targets"),  # peft has no default norms for BERT
])
def test_what_peft_refuses_is_a_config_error(overrides, key):
    cfg = validate(compose_run([*TINY["tiny-bert"], *overrides]))
    with pytest.raises(ConfigError) as err:
        _peft_model(cfg)
    assert err.value.key == key


FOURIERFT = """\
# @package _global_
# FourierFT (Gao et al. 2024): a method this suite does not ship, added by this one file.
rank: 64
method:
  name: fourierft
  label: FourierFT
  peft_type: FOURIERFT
  # `rank` is the number of trained spectral coefficients per target.
  capacity: n_frequency
  targets: qv
  learning_rate: 5e-2
  peft:
    scaling: 100.0
"""


def test_one_method_file_outside_the_suite_runs_end_to_end(tmp_path):
    """A method file in the user's own config folder (hydra.searchpath, docs/methods.md), nothing else:
    `lab-train` trains it, records it under its name and counts its adapter exactly, and the analysis
    labels it from the file."""
    import json
    import subprocess
    import sys

    from analysis.cells import build
    from analysis.collect import collect
    from conftest import ROOT

    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "fourierft.yaml").write_text(FOURIERFT)
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "method=fourierft", *TINY["tiny-bert"], *SHORT]
    proc = subprocess.run([sys.executable, "-m", "lab", *overrides, f"paths.results={tmp_path / 'results'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [folder] = list((tmp_path / "results").iterdir())
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "ok" and record["run_id"].startswith("fourierft-r64-tiny-bert-")
    peft_model = _peft_model(validate(compose_run(overrides)))
    assert type(peft_model.peft_config["default"]).__name__ == "FourierFTConfig"
    assert record["params"]["trainable"] == peft_model.get_nb_trainable_parameters()[0]
    # 64 coefficients on each of the 2 layers' query and value: the adapter, by its own parameters.
    assert record["params"]["adapter"] == 64 * 2 * 2
    [cell] = build(collect(str(tmp_path / "results")).runs, "test_accuracy")
    assert cell.label == "FourierFT r=64"


def test_method_sweep_budgets_are_comparable_to_lora_r8():
    """sweeps/peft_methods.yaml: each method with a knob at LoRA r=8's adapter size within 7 %, or one
    the comment names as far smaller by design; counted on the meta device as a run counts them."""
    from lab.memory.estimate import count_params
    from test_sweeps import sweep_jobs

    _, jobs = sweep_jobs("peft_methods")
    shapes = {tuple(sorted(o for o in job if o.startswith(("method=", "rank=", "method.targets=")))) for job in jobs}
    adapter = {}
    for shape in shapes:
        cfg = validate(compose_run(["+sweep=peft_methods", *shape]))
        adapter[cfg.method.name] = count_params(cfg, 2)["adapter"]
    assert set(adapter) >= {"full", "lora", "rslora", "pissa", "olora", "dora", "adalora", "ia3", "loha", "lokr",
                            "vera", "oft", "prompt_tuning", "ln_tuning"}
    lora = adapter["lora"]
    for name in ("rslora", "pissa", "olora", "dora", "adalora", "loha", "oft", "prompt_tuning"):
        assert abs(adapter[name] / lora - 1) <= 0.07, (name, adapter[name], lora)
    for name in ("vera", "lokr", "ia3", "ln_tuning"):
        assert 0 < adapter[name] < lora / 4, (name, adapter[name])


@pytest.mark.parametrize("method", ["vera", "ia3", "adalora", "prompt_tuning", "dora"])
def test_plan_declines_a_method_without_an_activation_formula_by_name(method):
    """lab-plan says it has no formula for the method, rather than print an estimate without its adapter."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "lab.plan", f"method={method}", "model=tiny-llama"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no activation formula for" in proc.stderr and (method in proc.stderr or "DoRA" in proc.stderr)
    assert not proc.stdout.strip()


def test_plan_estimates_lora_variants_it_has_a_formula_for():
    from lab.memory import estimate

    for method in ("lora", "rslora", "pissa", "olora", "qlora"):
        est = estimate.estimate(validate(compose_run([f"method={method}", *TINY["tiny-llama"]])), "cuda", 2, 16)
        assert est["activations"] > 0 and est["params"]["adapter"] > 0


@pytest.mark.parametrize("overrides", [["method=lora"], ["method=qlora", "rank=4"], ["method=dora"], ["method=full"]])
def test_a_record_from_before_method_files_reads_as_it_ran(overrides):
    """A record's config without the method-file keys (written before them) validates as the LoRA (or
    full fine-tuning) it was, with its run id: the estimator and the analysis rebuild runs from records."""
    from omegaconf import OmegaConf

    from lab.record import run_id

    now = validate(compose_run([*TINY["tiny-bert"], *overrides]))
    before = OmegaConf.to_container(now, resolve=True)
    for key in ("label", "peft_type", "capacity", "allows_4bit", "peft"):
        before["method"].pop(key)
    then = validate(OmegaConf.create(before))
    assert then.method.peft_type == now.method.peft_type and run_id(then) == run_id(now)
