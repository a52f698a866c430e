"""The collector and every table, on the records of a real sweep of tiny runs (tests/sweep_helpers.py)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis import memory_comparison, published, rank_vs_accuracy, report, tables
from analysis.collect import collect, describe, read_wandb, split_keys
from sweep_helpers import TINY_OK, tiny_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(sweep):
    return collect(str(sweep["results"])).runs


def test_collector_reads_every_record_with_its_status(runs):
    assert sorted(runs["status"]) == ["diverged", "failed"] + ["ok"] * TINY_OK
    ok = runs[runs["status"] == "ok"]
    assert ok["metrics.test_accuracy"].between(0, 1).all()
    assert (ok["params.trainable"] > 0).all() and (ok["peak_memory_bytes"] > 0).all()
    assert set(ok.loc[ok["method"] != "full", "targets"]) == {"qv"}
    assert ok.loc[ok["method"] == "full", "targets"].isna().all()
    assert ok.loc[ok["method"] == "full", "rank"].isna().all()


def test_collector_reports_corrupt_partial_and_foreign_folders(sweep, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(sweep["results"], results)
    (results / "lora-r4-killed-run" / "trainer").mkdir(parents=True)
    (results / "corrupt-run").mkdir()
    (results / "corrupt-run" / "result.json").write_text('{"status": "ok", "run_')
    (results / "foreign").mkdir()
    (results / "foreign" / "result.json").write_text(json.dumps({"hello": "world"}))
    some_run = next(results.glob("*/result.json")).parent
    (some_run / ".tmp-abc.json").write_text("{")  # a write cut short by kill -9: never read

    collection = collect(str(results))
    assert len(collection.runs) == TINY_OK + 2
    kinds = {Path(p["path"]).relative_to(results).parts[0]: p["problem"] for p in collection.problems}
    assert kinds["lora-r4-killed-run"].startswith("partial")
    assert kinds["corrupt-run"].startswith("corrupt")
    assert kinds["foreign"].startswith("not a run record")
    text = describe(collection)
    assert "3 run folders without a usable record" in text and "diverged" in text and "failed" in text


def test_collector_reads_wandb_runs_and_prefers_local_records(sweep, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(sweep["results"], results)
    logged = next(results.glob("*/result.json"))
    record = json.loads(logged.read_text())
    record["logging"]["run_path"] = "me/lab/abc"  # as if this run had logged online
    logged.write_text(json.dumps(record))

    def fake(run_id, config, summary):
        return SimpleNamespace(path=["me", "lab", run_id], url=f"https://wandb/{run_id}", config=config, summary=summary)

    config = {"method": {"name": "lora"}, "rank": 4, "model": {"name": "m"}, "dataset": {"name": "d"}, "seed": 0}
    api = SimpleNamespace(runs=lambda path: [
        fake("abc", config, {"status": "ok", "test_accuracy": 0.9}),
        fake("def", {**config, "seed": 1}, {"status": "ok", "test_accuracy": 0.8, "_step": 3}),
        fake("ghi", {}, {}),  # crashed before the tracker wrote a status
    ] if path == "me/lab" else [])
    collection = collect(str(results), wandb_project="lab", wandb_entity="me", wandb_api=api)
    remote = collection.runs[collection.runs["source"] == "wandb"]
    assert list(remote["run_id"]) == ["wandb:me/lab/def"]  # abc is the local record already
    assert remote.iloc[0]["metrics.test_accuracy"] == 0.8 and remote.iloc[0]["rank"] == 4
    assert len(collection.runs) == TINY_OK + 2 + 1
    assert [p["path"] for p in collection.problems] == ["wandb:me/lab/ghi"]
    assert read_wandb("lab", "me", api)[0][0]["run_id"] == "wandb:me/lab/abc"


def test_rank_table_means_over_seeds_with_full_reference(runs, tmp_path):
    table = rank_vs_accuracy.build(runs, "test_accuracy")
    display = table.display.set_index("rank")
    assert list(display.index) == ["2", "4", "8", "full FT"]
    assert list(display.columns) == ["lora", "qlora"]
    ok = runs[runs["status"] == "ok"]
    lora8 = ok[(ok["method"] == "lora") & (ok["rank"] == 8)]["metrics.test_accuracy"] * 100
    assert display.loc["8", "lora"] == tables.mean_std(lora8.mean(), lora8.std(), 2)
    full = ok[ok["method"] == "full"]["metrics.test_accuracy"] * 100
    assert display.loc["full FT", "lora"] == display.loc["full FT", "qlora"] == tables.mean_std(full.mean(), full.std(), 2)
    assert display.loc["2", "qlora"] == ""  # QLoRA ran at rank 4 only

    paths = rank_vs_accuracy.write(table, str(tmp_path))
    long = pd.read_csv(paths["csv"])
    row = long[(long["method"] == "lora") & (long["rank"] == 8)].iloc[0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(lora8.mean())
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert r"$\pm$" in open(paths["tex"]).read() and "| full FT" in open(paths["md"]).read()


def test_rank_table_splits_a_cell_that_mixes_settings(runs):
    ok = runs[runs["status"] == "ok"]
    attn = ok[ok["method"] == "lora"].assign(targets="attn")
    mixed = pd.concat([ok, attn], ignore_index=True)
    assert "targets" in split_keys(mixed)
    table = rank_vs_accuracy.build(mixed, "test_accuracy")
    assert {"targets=qv · lora", "targets=attn · lora", "targets=qv · qlora"} <= set(table.display.columns)


def test_rank_table_for_a_missing_metric_is_empty_and_says_so(runs):
    table = rank_vs_accuracy.build(runs, "test_perplexity")
    assert table.display.empty and table.left_out == TINY_OK
    assert "(no runs)" in table.markdown()


def test_memory_table_has_measured_numbers_per_method_and_rank(runs, tmp_path):
    paths = memory_comparison.write_all(runs, str(tmp_path), "test_accuracy")
    memory = pd.read_csv(paths["memory"]["csv"])
    assert [(m, None if pd.isna(r) else int(r)) for m, r in zip(memory["method"], memory["rank"])] == [
        ("full", None), ("lora", 2), ("lora", 8), ("qlora", 4)]
    assert (memory["n"] == 2).all()
    ok = runs[runs["status"] == "ok"]
    qlora = ok[ok["method"] == "qlora"].iloc[0]
    row = memory[memory["method"] == "qlora"].iloc[0]
    assert row["params.trainable"] == qlora["params.trainable"]
    assert row["memory.weights.frozen_4bit_packed"] > 0
    full_row = memory[memory["method"] == "full"].iloc[0]
    assert full_row["params.trainable"] == full_row["params.total"]
    assert open(paths["memory_breakdown"], "rb").read(4) == b"\x89PNG"
    text = open(paths["memory"]["md"]).read()
    assert "trainable params" in text and "peak (MB)" in text and "train tokens/s" in text


def test_memory_breakdown_stacks_categories_added_later(runs, tmp_path):
    ok = runs[runs["status"] == "ok"].assign(**{"memory.gradients": 1234.0, "memory.optimizer.adam_states": 5678.0})
    assert {"memory.gradients", "memory.optimizer.adam_states"} <= set(memory_comparison.byte_categories(ok))
    assert "memory.peak.peak_rss_above_baseline" not in memory_comparison.byte_categories(ok)
    agg, _, shown = memory_comparison.aggregate(ok, "test_accuracy")
    assert memory_comparison.breakdown_plot(agg, shown, str(tmp_path / "b.png"))


def test_seed_summary_puts_measured_numbers_beside_each_claim(runs, tmp_path):
    paths = memory_comparison.write_all(runs, str(tmp_path), "test_accuracy")
    summary = pd.read_csv(paths["summary"]["csv"]).set_index("method")
    # No rank ran under both LoRA and QLoRA, so each takes its own closest to the seed's rank 8.
    assert list(summary.index) == ["Full Fine-Tuning", "LoRA (r=8)", "QLoRA (r=4)"]
    assert summary.loc["Full Fine-Tuning", "seed: memory"] == "very high"
    assert summary.loc["Full Fine-Tuning", "measured: updates all weights"].startswith("yes")
    assert summary.loc["QLoRA (r=4)", "seed: updates all weights"] == "claimed yes (via quantization)"
    assert "4 bits" in summary.loc["QLoRA (r=4)", "measured: updates all weights"]
    ok = runs[runs["status"] == "ok"]
    lora8 = ok[(ok["method"] == "lora") & (ok["rank"] == 8)].iloc[0]
    assert summary.loc["LoRA (r=8)", "measured: trainable (tiny-bert)"] == f"{int(lora8['params.trainable']):,}"


def test_published_side_by_side_only_where_the_setting_matches(runs):
    assert published.build(runs)[0].empty  # tiny-bert on synthetic data matches no paper
    ok = runs[runs["status"] == "ok"]
    # The same records as if they were RoBERTa base on SST-2 (tiny-bert's qv set is also query, value).
    as_paper = ok.assign(model="roberta-base", dataset="sst2")
    as_paper.loc[as_paper["method"] == "lora", "config.method.alpha"] = as_paper["rank"] * 2
    table, _ = published.build(as_paper)
    assert list(table["method"]) == ["full", "lora r=8 alpha=16 (q,v)"]
    lora = table.iloc[1]
    assert lora["published"] == 95.1 and lora["dataset"] == "sst2"
    ours = ok[(ok["method"] == "lora") & (ok["rank"] == 8)]["metrics.test_accuracy"] * 100
    assert lora["difference (ours median - published)"] == pytest.approx(round(ours.median() - 95.1, 2))
    other_targets = as_paper.assign(**{"config.method.targets": "attn"})
    assert list(published.build(other_targets)[0]["method"]) == ["full"]


def test_report_writes_every_table_and_plot_for_a_sweep(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    report.main(["--results", str(sweep["results"]), "--sweep", str(sweep["sweep_dir"]), "--out", str(out)])
    printed = capsys.readouterr().out
    for name in ("report.md", "runs.csv", "rank_vs_accuracy.md", "rank_vs_accuracy.tex", "rank_vs_accuracy.csv",
                 "rank_vs_accuracy.png", "memory.md", "memory.csv", "memory_breakdown.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    assert printed.strip() == (out / "report.md").read_text().strip()
    assert "## Rank vs test_accuracy" in printed and "## The seed's summary, measured" in printed
    assert "invalid-config: " in printed and "rank=0" in printed  # the job with no record is listed
    assert "1 diverged" in printed and "1 failed" in printed
