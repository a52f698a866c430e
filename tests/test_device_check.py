"""The device check's CPU smoke mode (bench.device_check; scripts/gpu_check.sh --cpu-smoke): every path
of the GPU check but the CUDA-only calls, on tiny random-init Llama models, into one JSON."""

import json

import pytest

from bench import device_check
from lab.memory.estimate import config_for, count_params

EXPECTED_RUNS = [("llama-smoke-a", "full"), ("llama-smoke-a", "lora"), ("llama-smoke-a", "qlora"),
                 ("llama-smoke-a", "qlora"), ("llama-smoke-b", "full"), ("llama-smoke-b", "lora"),
                 ("llama-smoke-b", "qlora")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check") / "check.json"
    assert device_check.main(["--cpu-smoke", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_smoke_runs_every_method_and_writes_one_json(report):
    assert report["mode"] == "cpu-smoke" and report["ok"] is True
    assert [(r["model"], r["method"]) for r in report["runs"]] == EXPECTED_RUNS
    shape = report["shape"]
    for run in report["runs"]:
        assert run["status"] == "ok", run.get("error")
        assert run["tokens_per_step"] == shape["batch"] * shape["seq_len"]
        assert run["step_seconds_median"] > 0 and run["tokens_per_second"] > 0
        assert run["steps"] == shape["steps"]


def test_ledger_meets_the_estimate_per_category(report):
    for run in report["runs"]:
        ratios = run["memory"]["ledger_over_estimate"]
        for category in ("weights_total", "gradients", "optimizer_state", "buffers"):
            assert ratios[category] == pytest.approx(1.0, abs=0.01), (run["run_id"], category)
        assert ratios["activations"] == pytest.approx(1.0, abs=0.15)


def test_lab_plan_prediction_beside_each_run(report):
    for run in report["runs"]:
        plan = run["plan"]
        predicted = plan["predicted"]
        assert predicted["peak estimate (device)"] == sum(
            v for k, v in predicted.items() if k.startswith("weights:") or k in (
                "gradients", "optimizer state", "saved activations", "autocast weight copies (saved)", "buffers"))
        assert predicted["needed on the GPU"] > predicted["peak estimate (device)"]
        # on the CPU: the code path only (a CUDA bf16 prediction against an fp32 CPU run), and said so
        assert plan["comparable"] is False and "no CUDA device" in plan["note"]
        assert plan["error"]["gradients"] is not None and plan["within_headroom"] is None


def test_cpu_degrades_with_notes_not_failures(report):
    assert report["device"]["cuda_available"] is False and "not exercised" in report["device"]["note"]
    bnb = report["bitsandbytes"]
    assert bnb["version"] and "optimizer_update_8bit_blockwise" in bnb["cpu_kernels_for"]
    for run in report["runs"]:
        assert run["memory"]["cuda_peak_allocated_over_estimate"] is None
        assert run["memory"]["device_peak"]["device"] == "cpu"
        assert run["memory"]["placement"]["weights"]["device"] == 0
    paged_8bit = report["runs"][3]["optimizer"]
    assert (paged_8bit["requested"], paged_8bit["trainer_optim"], paged_8bit["state_bits"]) == (
        "paged_adamw_8bit", "adamw_8bit", 8)
    assert paged_8bit["paged"] is False
    assert any("needs CUDA to page" in note for note in report["runs"][3]["notes"])


def test_gpu_models_are_the_stated_sizes():
    sizes = {}
    for name, arch in device_check.GPU_MODELS.items():
        overrides = device_check.run_overrides(name, arch, "full", None, [], device_check.GPU_SHAPE, "/tmp/unused")
        sizes[name] = count_params(config_for("tiny-llama", "full", None, None, overrides))["total"]
    assert 0.45e9 < sizes["llama-0.5b"] < 0.55e9
    assert 1.4e9 < sizes["llama-1.5b"] < 1.6e9


def test_a_failed_run_is_reported_not_raised():
    entry = device_check.summarize_run({"status": "oom", "error": "OutOfMemoryError: ...", "method": "full"},
                                       device_check.GPU_SHAPE)
    assert entry["status"] == "oom" and "memory" not in entry
