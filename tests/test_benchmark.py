"""The benchmark's bookkeeping: FLOP counts against the closed-form rule, start-up timelines. No timings."""

import pytest
import torch

from bench import cases, flops, loops, startup

TINY = cases.llama(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512)


def closed_form(arch: dict, batch: int, seq: int, method: str, rank: int = 8) -> int:
    """6*N*T (full) or 4*N*T plus 6x the q/v adapters (LoRA), plus 3x the attention forward."""
    h, layers, vocab = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    head_dim = h // arch["num_attention_heads"]
    q_out, kv_out = arch["num_attention_heads"] * head_dim, arch["num_key_value_heads"] * head_dim
    per_layer = h * q_out + 2 * h * kv_out + q_out * h + 3 * h * arch["intermediate_size"]
    n_matmul = layers * per_layer + h * vocab  # lm_head is a matmul even when tied to the embeddings
    tokens = batch * seq
    attention = 3 * 4 * seq * q_out * layers * tokens
    if method == "full":
        return 6 * n_matmul * tokens + attention
    adapters = layers * rank * ((h + q_out) + (h + kv_out))
    return 4 * n_matmul * tokens + 6 * adapters * tokens + attention


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_step_flops_match_the_closed_form(method, tmp_path):
    case = cases.Case("tiny", TINY, method, batch=2, seq=16)
    job = cases.prepare(case, steps=2, results=str(tmp_path), device="cpu")
    job.setup_model()
    counted = flops.step_flops(job.model, job.cfg, case.batch, case.seq)
    assert counted["total"] == closed_form(TINY, case.batch, case.seq, "full" if method == "full" else "lora")


def test_lora_costs_about_two_thirds_of_full(tmp_path):
    arch = cases.SMOLLM2_135M
    ratio = closed_form(arch, 4, 128, "lora") / closed_form(arch, 4, 128, "full")
    assert 0.66 < ratio < 0.70


def test_rows_are_exactly_seq_tokens_for_both_tasks(tmp_path):
    bert = dict(cases.MINILM_L6, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                vocab_size=512)
    for arch in (TINY, bert):
        job = cases.prepare(cases.Case("tiny", arch, "lora", batch=2, seq=20), steps=1, results=str(tmp_path),
                            device="cpu")
        assert {len(ids) for ids in job.tokenized["train"]["input_ids"]} == {20}


def test_timeline_splits_a_multirun_into_jobs():
    events = {"python_up": [0.1], "imports_done": [5.0], "run_begin": [6.0, 20.0], "train_begin": [8.0, 21.0],
              "first_step_begin": [8.1, 21.1], "first_step_end": [9.0, 21.3], "train_end": [10.0, 22.0],
              "run_end": [12.0, 23.0], "exit": [23.5]}
    first, second = startup.timeline(events, process_s=25.0)
    assert first["phases"]["imports"] == pytest.approx(4.9)
    assert first["phases"]["Hydra (compose / launch job)"] == pytest.approx(1.0)
    assert first["phases"]["exit"] is None and first["command_to_first_step_s"] == pytest.approx(8.1)
    assert second["phases"]["imports"] is None
    assert second["phases"]["Hydra (compose / launch job)"] == pytest.approx(8.0)
    assert second["phases"]["teardown"] == pytest.approx(1.5)
    assert first["job_s"] + second["job_s"] == pytest.approx(25.0)


def test_interleaved_steps_take_turns_and_keep_counts(tmp_path):
    case = cases.Case("tiny", TINY, "lora", batch=2, seq=16)
    job = cases.prepare(case, steps=4, results=str(tmp_path), device="cpu")
    job.setup_model()
    trainable = [p for p in job.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    times = loops.interleaved(job, warmup=1, steps=3, clip=1.0)
    assert set(times) == {"suite", "plain", "plain + clip"}
    assert all(len(v) == 3 and all(t > 0 for t in v) for v in times.values())
    # All three trained the shared adapters, and the last twin step cleared its gradients.
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))
    assert all(p.grad is None for p in trainable)


def test_adapter_cases_are_the_method_comparison_at_its_budgets(tmp_path):
    bert = dict(cases.MINILM_L6, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                vocab_size=512)
    by_method = {c.method: c for c in cases.adapter_cases("tiny-bert", bert, batch=2, seq=16)}
    assert {"full", "lora", "dora", "adalora", "vera", "ia3", "loha", "lokr", "oft", "prompt_tuning",
            "ln_tuning"} <= set(by_method)
    assert (by_method["vera"].rank, by_method["loha"].rank, by_method["prompt_tuning"].rank) == (256, 4, 192)
    assert "method.targets=[LayerNorm]" in by_method["ln_tuning"].extra
    # Each one is a job the suite can build, AdaLoRA's schedule included at a benchmark's few steps.
    for method in ("adalora", "ln_tuning"):
        job = cases.prepare(by_method[method], steps=2, results=str(tmp_path), device="cpu")
        job.setup_model()
        assert job.params["trainable"] > 0


def test_targets_table_marks_each_target_met_or_not():
    from bench import render

    def row(name, method, precision, ratio, flops, step):
        return {"case": {"name": name, "method": method}, "precision": precision, "flops_per_step": {"total": flops},
                "suite_step_s": {"median": step}, "suite_over_plain_clip_throughput": {"median": ratio}}

    report = {"peak": {"float32": {"peak_flops_per_s": 100.0}, "bfloat16": {"peak_flops_per_s": 400.0}},
              "methods": [row("minilm-l6-shape", "full", "fp32", 0.99, 60.0, 1.0),
                          row("minilm-l6-shape bf16", "full", "bf16", 0.95, 100.0, 1.0)],
              "startup": {"separate": [{"jobs": [{"command_to_first_step_s": 6.0}]},
                                       {"jobs": [{"command_to_first_step_s": 4.5}]}],
                          "launchers": {"local": {"process_s": 30.0, "jobs": [
                              {"method": "full", "startup": 0.5, "setup": 1.0, "train": 9.0, "evaluate": 4.0,
                               "checks": 0.0, "write": 0.1},
                              {"method": "lora", "startup": 0.5, "setup": 2.0, "train": 5.0, "evaluate": 6.0,
                               "checks": 2.0, "write": 0.1}]}}}}
    rows = render.target_rows(report)
    assert rows[0].endswith("| 0.990 | yes | Where a step's time goes |")
    assert "| 0.950 | **no** |" in rows[1]
    assert "| 60% | yes |" in rows[2] and "(fp32)" in rows[2]  # 60 FLOP/s of the fp32 peak's 100
    assert "| 25% | **no** |" in rows[3]  # the bf16 row against the bf16 peak, not the fp32 one
    assert "| 4.50 s | yes |" in rows[4]
    assert "`local` launcher (worst method) | ≤ 10 s | 10.60 s | **no** |" in rows[5]  # LoRA's: all but its train


def test_each_local_launcher_runs_the_sweep_and_its_jobs_split_their_time(tmp_path):
    from bench import render

    overrides = ["model=tiny-llama", "dataset=synthetic-lm", "trainer.max_steps=3", "logger=none",
                 "skip_finished=false", "method=lora"]
    runs = startup.launcher_runs(str(tmp_path), lambda line: None, overrides)
    assert set(runs) == set(startup.LAUNCHERS)
    for run in runs.values():
        assert [job["method"] for job in run["jobs"]] == ["lora"]
        assert all(job["startup"] > 0 and job["train"] > 0 for job in run["jobs"])
    lines = render.render_launchers({"launchers": runs, "launcher_overrides": overrides})
    assert sum(line.startswith("| local") for line in lines) == 2


def test_breakdown_times_the_steps_and_not_the_ledger_probe(tmp_path):
    """The run's ledger probe calls training_step at train begin, before any step: the instrumented
    run must leave it out of its step marks rather than fail."""
    budget = cases.smoke_budget()
    out = loops.breakdown_case(cases.Case("tiny", TINY, "lora", batch=2, seq=16), budget, "cpu", str(tmp_path),
                               budget.small_steps)
    assert out["steps"] == budget.small_steps
    assert out["suite_ms"]["forward + backward (training_step)"] > 0
