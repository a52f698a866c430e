"""LoRA scaling conventions (alpha = 2r, alpha fixed, rsLoRA) and DoRA, alone and on a 4-bit base."""

import math

import pytest
import torch

from lab.memory.compare import compare
from conftest import compose_run
from lab import methods, models
from lab.memory import estimate as accounting
from lab.config import HELD_ALPHA, ConfigError, validate
from lab.record import run_id, semantic_config
from lab.train import run

TINY = {"tiny-bert": ["model=tiny-bert", "dataset=synthetic-cls"],
        "tiny-llama": ["model=tiny-llama", "dataset=synthetic-lm"]}


@pytest.mark.parametrize("overrides,key", [
    (["method.scaling=sqrt"], "method.scaling"),
    (["rank=4", "method.alpha=16"], "method.alpha"),  # alpha_2r means alpha = 8 here
    (["method=full", "+method.scaling=fixed"], "method.scaling"),
    (["method=full", "+method.use_dora=true"], "method.use_dora"),
    (["method=lora", "method.use_dora=true"], "method.use_dora"),
    (["method=dora", "method.use_dora=false"], "method.use_dora"),
])
def test_invalid_scaling_and_dora_settings_name_key_value_and_allowed(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_run(["model=tiny-bert", "dataset=synthetic-cls", *overrides]))
    assert err.value.key == key and "allowed:" in str(err.value)


def test_unknown_scaling_lists_the_three_conventions():
    with pytest.raises(ConfigError, match="alpha_2r, fixed, rslora"):
        validate(compose_run(["method.scaling=sqrt"]))


def test_alpha_under_each_scaling():
    def alpha(*overrides):
        return validate(compose_run(["rank=4", *overrides])).method.alpha

    assert alpha() == 8
    assert alpha("method.scaling=fixed") == alpha("method.scaling=rslora") == HELD_ALPHA
    assert alpha("method.scaling=fixed", "method.alpha=32") == 32
    assert validate(compose_run(["rank=16", "method.scaling=fixed"])).method.alpha == HELD_ALPHA


@pytest.mark.parametrize("scaling,scale", [("alpha_2r", 2.0), ("fixed", HELD_ALPHA / 4),
                                           ("rslora", HELD_ALPHA / math.sqrt(4))])
def test_peft_applies_the_chosen_scale(scaling, scale):
    cfg = validate(compose_run([*TINY["tiny-bert"], "rank=4", f"method.scaling={scaling}"]))
    model = models.load_model(models.checkpoint_path(cfg.model, cfg.paths.cache), cfg.model, torch.float32, None, 2,
                              "cpu")
    peft_model = methods.apply_method(model, cfg, "cpu")
    scales = [m.scaling["default"] for m in peft_model.modules() if isinstance(getattr(m, "scaling", None), dict)]
    assert scales and scales == pytest.approx([scale] * len(scales))


def test_run_id_changes_only_where_the_outcome_can():
    default = validate(compose_run([]))
    assert {"scaling", "use_dora"}.isdisjoint(semantic_config(default)["method"])  # ids from before stay
    ids = {run_id(validate(compose_run(o))) for o in (
        [], ["method.scaling=fixed"], ["method.scaling=rslora"], ["method=dora"], ["method=qlora"],
        ["method=qlora", "method.use_dora=true"])}
    assert len(ids) == 6


def _peft_count(cfg):
    quant = methods.quantization_config(cfg, "cpu", list(cfg.model.head_modules))
    num_labels = 2 if cfg.model.task == "cls" else None
    model = models.load_model(models.checkpoint_path(cfg.model, cfg.paths.cache), cfg.model, torch.float32, quant,
                              num_labels, "cpu")
    peft_model = methods.apply_method(model, cfg, "cpu")
    trainable, total = peft_model.get_nb_trainable_parameters()
    adapter = sum(p.numel() for name, p in peft_model.named_parameters() if p.requires_grad and "lora_" in name)
    return peft_model, {"trainable": trainable, "total": total, "adapter": adapter}


@pytest.mark.parametrize("model", list(TINY))
@pytest.mark.parametrize("method", [["method=dora"], ["method=qlora", "method.use_dora=true"]],
                         ids=["dora", "qlora-dora"])
def test_estimator_counts_dora_exactly_as_peft(model, method):
    overrides = [*TINY[model], *method, "rank=4", "method.targets=attn"]
    peft_model, counted = _peft_count(validate(compose_run(overrides)))
    plan = accounting.Plan(validate(compose_run(overrides)))
    assert plan.params() == counted
    # DoRA adds to LoRA one trainable magnitude per output feature of each targeted matrix.
    lora = accounting.Plan(validate(compose_run([*TINY[model], "method=lora", "rank=4", "method.targets=attn"])))
    magnitudes = sum(m.out_features for m in peft_model.modules() if hasattr(m, "lora_magnitude_vector")
                     and "default" in m.lora_magnitude_vector)
    assert counted["trainable"] == lora.params()["trainable"] + magnitudes
    trainable_bytes = {k: v for k, v in plan.weight_bytes().items() if k.startswith("trainable")}
    from lab.memory.measure import weight_bytes
    assert trainable_bytes == {k: v for k, v in weight_bytes(peft_model).items() if k.startswith("trainable")}


@pytest.mark.parametrize("method", [["method=dora"], ["method=qlora", "method.use_dora=true"],
                                    ["method=lora", "method.scaling=rslora"]], ids=["dora", "qlora-dora", "rslora"])
def test_short_run_ends_ok_with_base_untouched(method, tmp_path):
    record = run(compose_run([*TINY["tiny-bert"], *method, "rank=4", "trainer.max_steps=6", "trainer.batch_size=16",
                              "trainer.logging_steps=2", "dataset.sizes.train=96", "dataset.sizes.validation=32",
                              "dataset.sizes.test=32", "logger=none"], results=tmp_path))
    assert record["status"] == "ok", record.get("error")
    assert record["config"]["method"]["use_dora"] == ("use_dora=true" in method[-1] or method[0] == "method=dora")
    assert record["checks"]["frozen_base_unchanged"] is True
    assert record["checks"]["merge_max_abs_logit_diff"] < 1e-4
    assert 0 <= record["metrics"]["validation_accuracy"] <= 1
    # The estimator's weights, gradients and optimizer state are the measured ledger's, DoRA or not;
    # DoRA's saved activations have no formula, and the record says so.
    row = compare(record)
    assert row["weights+gradients+optimizer error"] == 0
    assert ("DoRA" in (row["estimate_error"] or "")) == record["config"]["method"]["use_dora"]
