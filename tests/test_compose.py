"""Every method x model x dataset composes and validates (or fails cleanly on a task mismatch)."""

import itertools

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose_run
from lab.config import ConfigError, validate

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


def test_config_groups_are_not_empty():
    assert {"full", "lora", "qlora"} <= set(METHODS)
    assert {"tiny-bert", "tiny-llama"} <= set(MODELS)
    assert {"synthetic-cls", "synthetic-lm"} <= set(DATASETS)


# A method file and a dataset never interact (the dataset only has to fit the model's task): every
# model x dataset under the default method, and every method on every model with one dataset of its
# task, cover every pair that can fail without composing methods x models x datasets (2,000 configs).
ONE_DATASET = {"cls": "synthetic-cls", "lm": "synthetic-lm"}
COMBINATIONS = sorted({("lora", model, dataset) for model, dataset in itertools.product(MODELS, DATASETS)}
                      | {(method, model, ONE_DATASET[str(OmegaConf.load(CONF / "model" / f"{model}.yaml").task)])
                         for method, model in itertools.product(METHODS, MODELS)})


@pytest.mark.parametrize("method,model,dataset", COMBINATIONS)
def test_every_combination_composes(method, model, dataset):
    cfg = compose_run([f"method={method}", f"model={model}", f"dataset={dataset}"])
    model_task = OmegaConf.load(CONF / "model" / f"{model}.yaml").task
    data_task = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml").task
    if model_task != data_task:
        with pytest.raises(ConfigError, match="dataset"):
            validate(cfg)
        return
    if method == "prompt_tuning" and model.startswith("roberta"):
        # 16 virtual tokens before inputs of up to 512 tokens overflow RoBERTa's 514 positions.
        with pytest.raises(ConfigError, match="virtual tokens"):
            validate(cfg)
        return
    run = validate(cfg)
    assert run.method.name == method
    # A rank exactly where the method file names the peft key it sets (full, IA3, LN tuning have none).
    assert (run.rank is None) == (run.method.capacity is None)
    if run.method.peft_type == "LORA" and run.method.scaling == "alpha_2r":
        assert run.method.alpha == 2 * run.rank  # alpha = 2r unless set


def test_default_run_is_lora_rank_8():
    run = validate(compose_run([]))
    assert (run.method.name, run.rank) == ("lora", 8)


def test_qlora_defaults_are_nf4_double_quant():
    run = validate(compose_run(["method=qlora"]))
    assert run.method.quant.type == "nf4" and run.method.quant.double_quant is True
    assert run.method.quant.compute_dtype == "auto"
