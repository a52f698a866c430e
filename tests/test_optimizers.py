"""Optimizer choices: validated names, the CPU fallbacks, what really ran, and the estimator's
optimizer-state bytes against bitsandbytes' real (CPU) 8-bit AdamW state."""

import pytest
from omegaconf import OmegaConf

from bench.ledger_vs_estimate import short_run
from conftest import compose_run
from lab.memory import estimate as accounting
from lab.config import ConfigError, validate
from lab.decisions import choose_optimizer


def test_unknown_optimizer_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        validate(compose_run(["method=qlora", "method.optimizer=sgd"]))
    assert err.value.key == "method.optimizer"
    assert "paged_adamw_8bit" in str(err.value) and "adamw_8bit" in str(err.value)


@pytest.mark.parametrize("method,optimizer,device,used", [
    ("qlora", "auto", "cuda", "paged_adamw_32bit"),
    ("qlora", "auto", "cpu", "adamw_torch"),
    ("lora", "auto", "cuda", "adamw_torch"),
    ("qlora", "paged_adamw_8bit", "cuda", "paged_adamw_8bit"),
    ("qlora", "paged_adamw_8bit", "cpu", "adamw_8bit"),  # the 8-bit state stays; only paging is CUDA's
    ("full", "adamw_8bit", "cpu", "adamw_8bit"),
])
def test_requested_and_used_optimizer(method, optimizer, device, used):
    cfg = validate(compose_run([f"method={method}", f"method.optimizer={optimizer}"]))
    notes = []
    requested, ran = choose_optimizer(cfg, device, notes)
    assert ran == used
    assert (requested != ran) == bool(notes)


def _exact_estimate(record):
    cfg = validate(OmegaConf.create(record["config"]))
    step = record["memory"]["measured_steps"][0]
    return accounting.estimate(cfg, "cpu", step["batch"], step["seq_len"], activations=False)


@pytest.mark.parametrize("model,method,overrides", [
    ("tiny-llama", "full", []),  # embeddings overridden to 32-bit state; norms under 4096 elements
    ("tiny-bert", "full", []),
    ("tiny-llama", "qlora", ["rank=32", "method.targets=all-linear"]),  # 32 x 128 adapters: 8-bit from 4096
    ("tiny-llama", "lora", ["rank=4"]),  # every tensor under 4096 elements: fp32 state only
])
@pytest.mark.parametrize("optimizer", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_adamw_state_is_what_the_estimator_counts(tmp_path, model, method, overrides, optimizer):
    rank = [o for o in overrides if o.startswith("rank=")]
    extra = [o for o in overrides if not o.startswith("rank=")] + [f"method.optimizer={optimizer}"]
    if rank:
        extra.append(rank[0])
    record = short_run(model, method, str(tmp_path), extra)
    ran = record["optimizer"]
    assert ran["ran"] == "bitsandbytes.optim.adamw.AdamW" and ran["state_bits"] == 8
    assert ran["paged"] is False and ran["paged_state_bytes"] == 0  # nothing pages on the CPU
    assert ran["paged_requested"] is False  # the paged request ran unpaged (noted)
    measured = record["memory"]["optimizer_state"]
    estimated = _exact_estimate(record)
    assert estimated["optimizer"] == "adamw_8bit"
    assert measured == estimated["optimizer_state_by_key"]
    if method != "lora":
        assert measured["absmax1"] > 0 and measured["qmap1"] == 1024


def test_paged_8bit_estimate_pages_only_large_states_on_cuda():
    cfg = accounting.config_for("tiny-llama", "full", overrides=["model.architecture.vocab_size=4096",
                                                                "method.optimizer=paged_adamw_8bit"])
    embed = lm_head = 4096 * 64  # both over bitsandbytes' 1e5-element paging threshold
    cuda = accounting.Plan(cfg, "cuda").optimizer_bytes()
    assert cuda["paged"] == 2 * 4 * embed + 2 * 1 * lm_head  # embeddings keep fp32 state, lm_head 8-bit
    assert accounting.Plan(cfg, "cpu").optimizer_bytes("paged_adamw_8bit")["paged"] == 0
