"""Offloading: the estimator's host / device columns, and the measured ledger's placement (on a
CPU-only run every byte is host memory, and the ledger says so)."""

import pytest

from bench.ledger_vs_estimate import short_run
from lab.memory import estimate as accounting

CATEGORIES = ("weights", "buffers", "gradients", "optimizer_state", "activations")


@pytest.fixture(scope="module")
def cfg():
    return accounting.config_for("tiny-llama", "full")


def _estimate(cfg, offload):
    return accounting.estimate(cfg, "cuda", 4, 32, offload=offload)


@pytest.mark.parametrize("offload,on_host", [
    ("none", set()),
    ("optimizer", {"optimizer_state"}),
    ("full", {"weights", "gradients", "optimizer_state"}),
])
def test_offload_moves_whole_categories_to_the_host_column(cfg, offload, on_host):
    est = _estimate(cfg, offload)
    device, host = est["placement"]["device"], est["placement"]["host"]
    assert set(host) == on_host and set(device) == set(CATEGORIES) - on_host
    amounts = {"weights": est["weights_total"], "buffers": est["buffers"], "gradients": est["gradients"],
               "optimizer_state": est["optimizer_state"], "activations": est["activations"]}
    assert {**device, **host} == amounts
    assert est["host_total"] == sum(amounts[k] for k in on_host)
    assert est["device_total"] + est["host_total"] == est["peak_estimate"]


def test_full_fine_tuning_offload_arithmetic(cfg):
    params = accounting.count_params(cfg)["total"]
    est = _estimate(cfg, "full")
    # fp32 AdamW: weights 4 + gradients 4 + two moments 8 bytes per parameter, plus a 4-byte step per tensor
    tensors = len(accounting.Plan(cfg, "cuda").trainable())
    assert est["host_total"] == 16 * params + 4 * tensors
    assert est["device_total"] == est["buffers"] + est["activations"]


def test_offload_follows_the_config_and_rejects_unknown_values():
    offloaded = accounting.config_for("tiny-llama", "full", overrides=["distributed=fsdp_offload"])
    assert accounting.estimate(offloaded, "cuda", 2, 16)["offload"] == "full"
    plain = accounting.config_for("tiny-llama", "full")
    assert accounting.estimate(plain, "cuda", 2, 16)["offload"] == "none"
    with pytest.raises(ValueError, match="offload"):
        accounting.estimate(plain, "cuda", 2, 16, offload="nvme")


@pytest.mark.parametrize("method", ["lora", "qlora"])  # qlora: 4-bit constants placed with their weights
def test_cpu_run_ledger_places_every_byte_on_the_host(tmp_path, method):
    memory = short_run("tiny-llama", method, str(tmp_path))["memory"]
    where = memory["placement"]
    assert where["weights"] == {"host": sum(memory["weights"].values()), "device": 0}
    assert where["gradients"] == {"host": memory["gradients"], "device": 0}
    assert where["optimizer_state"] == {"host": sum(memory["optimizer_state"].values()), "device": 0}
    assert where["buffers"] == {"host": memory["buffers"], "device": 0}
    assert "every byte is counted as host" in memory["placement_note"]
