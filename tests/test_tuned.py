"""Learning rate chosen per cell on validation, bootstrap intervals, the seed's claims and the Pareto
frontier, on hand-built records (no training)."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import claims, pareto, report, tuned, uncertainty
from analysis.collect import to_frame

DEFAULTS = {"full": 1e-4, "lora": 2e-3, "qlora": 2e-3, "dora": 2e-3, "qlora+dora": 2e-3}


def record(method, rank, seed, lr, test, validation, status="ok", scaling="alpha_2r", trainable=None, ledger=None):
    adapter = method != "full"
    return {
        "run_id": f"{method}-r{rank}-{scaling}-lr{lr}-s{seed}", "status": status, "method": method,
        "rank": rank if adapter else None, "model": "minilm-l6", "dataset": "movie-sentences", "seed": seed,
        "params": {"trainable": trainable or (rank * 1000 if adapter else 22_700_000), "total": 22_700_000},
        "metrics": {} if status != "ok" else {"test_accuracy": test, "validation_accuracy": validation,
                                              "validation_loss": 1 - validation},
        "memory": {"unit": "bytes", "ledger_total": ledger or (100e6 if adapter else 400e6)},
        "config": {"method": {"name": method, "learning_rate": lr, "scaling": scaling if adapter else None,
                              "use_dora": method == "dora", "alpha": 2 * rank if adapter else None,
                              "targets": "qv" if adapter else None},
                   "trainer": {"learning_rate": lr, "max_steps": 100}},
    }


def grid(method, rank, values, scaling="alpha_2r", **kw):
    """values: {lr: [(test, validation) per seed]}"""
    return [record(method, rank, seed, lr, t, v, scaling=scaling, **kw)
            for lr, per_seed in values.items() for seed, (t, v) in enumerate(per_seed)]


def test_learning_rate_is_chosen_by_validation_never_by_test():
    # At 8e-3 validation is best and test worst; at 2e-3 (the default) the other way round.
    records = grid("lora", 4, {5e-4: [(0.70, 0.70)] * 3, 2e-3: [(0.90, 0.60), (0.91, 0.61), (0.89, 0.60)],
                               8e-3: [(0.50, 0.80), (0.51, 0.81), (0.52, 0.79)]})
    result = tuned.build(to_frame(records), "test_accuracy", DEFAULTS)
    assert result.selection == "validation_accuracy"
    views = result.cells.set_index("view")
    assert views.loc["tuned", "lr"] == 8e-3 and views.loc["default", "lr"] == 2e-3
    assert views.loc["tuned", "mean"] == pytest.approx(51.0)
    # Moving the test numbers anywhere leaves the choice alone.
    shuffled = [{**r, "metrics": {**r["metrics"], "test_accuracy": 0.99 - r["metrics"]["test_accuracy"]}}
                for r in records]
    assert tuned.build(to_frame(shuffled), "test_accuracy", DEFAULTS).cells.set_index("view").loc["tuned", "lr"] == 8e-3


def test_a_learning_rate_with_a_diverged_seed_is_not_eligible_and_ties_go_to_the_smaller():
    records = grid("lora", 4, {5e-4: [(0.7, 0.75)] * 3, 2e-3: [(0.7, 0.75)] * 3, 8e-3: [(0.9, 0.9)] * 2})
    records.append(record("lora", 4, 2, 8e-3, None, None, status="diverged"))
    chosen = tuned.build(to_frame(records), "test_accuracy", DEFAULTS).cells.set_index("view").loc["tuned"]
    assert chosen["lr"] == 5e-4


def test_records_without_validation_accuracy_fall_back_to_validation_loss_and_say_so():
    records = grid("lora", 4, {2e-3: [(0.8, 0.7)] * 2, 8e-3: [(0.7, 0.9)] * 2})
    for r in records:
        del r["metrics"]["validation_accuracy"]
    result = tuned.build(to_frame(records), "test_accuracy", DEFAULTS)
    assert result.selection == "validation_loss" and "validation_accuracy" in result.notes[0]
    assert result.cells.set_index("view").loc["tuned", "lr"] == 8e-3  # lowest validation loss


def test_dora_on_the_4bit_base_is_its_own_row_at_qlora_s_default():
    records = (grid("qlora", 4, {2e-3: [(0.8, 0.8)] * 2, 8e-3: [(0.7, 0.7)] * 2})
               + [{**r, "run_id": r["run_id"] + "-dora", "config": {**r["config"], "method": {
                   **r["config"]["method"], "use_dora": True}}}
                  for r in grid("qlora", 4, {2e-3: [(0.6, 0.6)] * 2, 8e-3: [(0.75, 0.75)] * 2})])
    cells = tuned.build(to_frame(records), "test_accuracy", DEFAULTS).cells.set_index(["method", "view"])
    assert cells.loc[("qlora", "tuned"), "lr"] == 2e-3 and cells.loc[("qlora+dora", "tuned"), "lr"] == 8e-3
    assert cells.loc[("qlora+dora", "default"), "mean"] == pytest.approx(60.0)


def test_default_learning_rates_are_the_method_configs():
    assert tuned.default_learning_rates() == DEFAULTS


def test_bootstrap_interval_is_deterministic_and_holds_the_mean():
    values = [81.2, 80.1, 79.4, 82.0]
    low, high = uncertainty.mean_ci(values)
    assert (low, high) == uncertainty.mean_ci(values)
    assert low < np.mean(values) < high and min(values) <= low and high <= max(values)
    assert np.isnan(uncertainty.mean_ci([80.0])[0])
    apart = uncertainty.difference_ci([90.0, 90.5, 91.0], [80.0, 80.5, 81.0])
    assert apart[0] > 0 and uncertainty.within_noise(apart) is False
    assert uncertainty.within_noise(uncertainty.difference_ci([80.0, 82.0, 81.0], [81.0, 80.0, 82.0])) is True


def _cells(rows):
    """claims.judge input: rows of (method, rank, test values)."""
    return pd.DataFrame([{"method": m, "rank": r, "test_values": v, "mean": float(np.mean(v)), "lr": 2e-3}
                         for m, r, v in rows])


def test_claims_are_judged_by_their_stated_rules():
    full = [80.0, 80.2, 79.8]
    adapters = _cells([
        ("lora", 4, [70.0, 70.1, 69.9]), ("lora", 16, [79.5, 79.4, 79.6]),  # 0.5 below: competitive
        ("qlora", 1, [70.0, 70.2, 69.8]), ("qlora", 4, [76.0, 76.2, 75.8]), ("qlora", 16, [78.0, 78.1, 77.9]),
        ("qlora", 64, [78.1, 78.3, 77.9]), ("qlora", 256, [77.9, 78.0, 78.1]),
    ])
    judged = {c["claim"]: c for c in claims.judge(full, adapters)}
    lora = judged["LoRA competitive at ranks 8 or 16"]
    assert lora["verdict"] == "held" and lora["evidence"][0].startswith("r=16: 79.50")
    qlora = judged["QLoRA similar to full fine-tuning"]
    assert qlora["verdict"] == "not held"  # 2 points below at 16, 64 and 256, far beyond noise
    assert [e.split(":")[0] for e in qlora["evidence"]] == ["r=16", "r=64", "r=256"]
    diminishing = judged["QLoRA gains diminish beyond some rank (the seed: beyond 256)"]
    assert diminishing["verdict"] == "held" and "r* = 16" in diminishing["evidence"]

    steady = _cells([("qlora", r, [60.0 + 5 * i, 60.1 + 5 * i, 59.9 + 5 * i]) for i, r in enumerate((1, 4, 16, 64))])
    assert {c["claim"]: c for c in claims.judge(full, steady)}[diminishing["claim"]]["verdict"] == "not held"
    assert claims.judge([], adapters)[0]["verdict"] == "not testable"


def test_claims_use_only_the_default_conventions():
    records = (grid("full", 0, {1e-4: [(0.80, 0.8), (0.802, 0.8), (0.798, 0.8)]})
               + grid("lora", 16, {2e-3: [(0.60, 0.7), (0.601, 0.7), (0.599, 0.7)]}, scaling="rslora")
               + grid("lora", 16, {2e-3: [(0.795, 0.7), (0.796, 0.7), (0.794, 0.7)]}))
    result = tuned.build(to_frame(records), "test_accuracy", DEFAULTS)
    assert "config.method.scaling" in result.specific
    judged = claims.judge_all(result.cells, tuned.shared_keys(result), result.specific)
    lora = [c for c in judged if c["claim"].startswith("LoRA") and c["view"] == "tuned"]
    assert len(lora) == 1 and lora[0]["verdict"] == "held"  # the rsLoRA cell (20 points down) is not judged


def test_frontier_keeps_exactly_the_undominated_points():
    costs = [1, 2, 3, 4, 4, 5]
    scores = [70, 80, 75, 85, 84, 85]
    assert list(pareto.frontier(costs, scores)) == [True, True, False, True, False, False]
    assert list(pareto.frontier(costs, [1, 2, 3, 0.5, 4, 0.1], higher_is_better=False)) == [
        True, False, False, True, False, True]
    assert list(pareto.frontier([1, np.nan], [1, 2])) == [True, False]


def test_report_with_tune_lr_writes_side_by_side_claims_and_pareto(tmp_path, capsys):
    records = grid("full", 0, {3e-5: [(0.75, 0.74)] * 3, 1e-4: [(0.80, 0.79), (0.81, 0.80), (0.79, 0.78)],
                               3e-4: [(0.78, 0.77)] * 3})
    for method, ledger in (("lora", 90e6), ("qlora", 60e6)):
        for rank in (1, 4, 16, 64, 256):
            low_lr = 0.70 + 0.02 * np.log2(rank) / 2
            records += grid(method, rank, {5e-4: [(low_lr, low_lr)] * 3,
                                           2e-3: [(0.78 + 0.001 * s, 0.77 + 0.001 * s) for s in range(3)],
                                           8e-3: [(0.70, 0.69)] * 3}, ledger=ledger + rank * 1e5)
    results = tmp_path / "results"
    for r in records:
        (results / r["run_id"]).mkdir(parents=True)
        (results / r["run_id"] / "result.json").write_text(json.dumps(r))
    out = tmp_path / "report"
    report.main(["--results", str(results), "--out", str(out), "--tune-lr"])
    printed = capsys.readouterr().out
    for name in ("tuned.md", "tuned.csv", "tuned.png", "tuned_grid.md", "claims.csv", "pareto.csv", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    assert "## Learning rate chosen per cell on validation" in printed and "LR chosen on validation" in printed
    assert "**LoRA competitive at ranks 8 or 16**" in printed and "within noise" in printed
    table = pd.read_csv(out / "tuned.csv")
    full = table[(table["method"] == "full") & (table["view"] == "tuned")].iloc[0]
    assert full["lr"] == 1e-4 and full["mean"] == pytest.approx(80.0)
    frontier = pd.read_csv(out / "pareto.csv")
    assert frontier.loc[frontier["method"] == "full", "frontier_trainable_params"].item()
