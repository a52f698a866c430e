"""The README's workflow "Compare the methods on your own data", end to end on CSV files made here:
the documented sweep and report commands, the protocol (learning rates chosen on validation at
tuning seeds that are never reported, one length rule, convergence recorded and flagged), the task
named after its file everywhere, and a second task that never touches the first one's folders."""

import glob
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from lab import selection
from sweep_helpers import write_reviews_csv

# What the README's first-look command adds to stay a test: the tiny model and learning-rate grids that
# suit it (a random-init model wants larger rates than the pretrained defaults), two reported seeds,
# two jobs at a time, each in its process (the sweep's launcher). The cap (8 epochs of 9 steps) and the
# quick variant's patience (3 evaluations, each 5 % of the cap) are the length rule.
GRIDS = "[{method:full,method.learning_rate:'1e-3,3e-3'},{method:'lora,qlora',rank:8,method.learning_rate:'1e-2,3e-2'}]"
FAST = ["model=tiny-bert", "trainer.batch_size=32", "trainer.epochs=8", "trainer.logging_steps=3",
        f"hydra.sweeper.groups={GRIDS}", "hydra.sweeper.bracket.confirm_seeds='0,1'", "sweep.report_seeds=[0,1]",
        "logger=none"]
SWEEP = "method_comparison_quick"


def compare(workdir, csv_path, extra=FAST):
    command = [sys.executable, "-m", "lab", "-m", f"+sweep={SWEEP}", "dataset=csv",
               f"dataset.path={csv_path}", "dataset.columns.text=review", "dataset.columns.label=sentiment", *extra]
    sweep = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1200)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    report = subprocess.run([sys.executable, "-m", "analysis", "report", "--results", "results",
                             "--sweep", f"multirun/{SWEEP}-{stem}"], cwd=workdir, capture_output=True,
                            text=True, timeout=1200)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return workdir / "reports" / f"{SWEEP}-{stem}" / "report.md"


def records(workdir, stem):
    out = []
    for path in glob.glob(str(workdir / "results" / f"*-{stem}-s*" / "result.json")):
        with open(path) as f:
            out.append(json.load(f))
    return out


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("own-task")
    write_reviews_csv(workdir / "gadget_reviews.csv", rows=400, seed=0)
    return workdir, compare(workdir, workdir / "gadget_reviews.csv")


def test_the_report_answers_which_method_first(first):
    _, path = first
    text = path.read_text()
    assert text.index("## The answer") < text.index("## Results")
    answer = text[text.index("## The answer"):text.index("## Results")]
    for needed in ("Full FT", "LoRA r=8", "QLoRA r=8", "Difference to full FT", "Memory ledger, MB",
                   "Artifact on disk", "Seed SD", "Non-inferior at −1?", "Rule: a cell is recommended only if"):
        assert needed in answer, needed
    assert "minilm" not in answer and "7B" not in answer  # nothing about other models


def test_learning_rates_are_chosen_on_validation_at_tuning_seeds_that_are_never_reported(first):
    workdir, path = first
    runs = records(workdir, "gadget_reviews")
    assert {r["role"] for r in runs if r["seed"] == 100} == {"tune"}
    assert {r["seed"] for r in runs if r["role"] == "report"} == {0, 1}
    for method in ("full", "lora", "qlora"):
        tuning = [r for r in runs if r["method"] == method and r["role"] == "tune"]
        by_value = {}
        for r in tuning:
            by_value.setdefault(r["config"]["method"]["learning_rate"], []).append(selection.Trial(
                r["seed"], r["metrics"]["validation_accuracy"], r["status"] == "ok" and r["health"] != "collapsed"))
        assert len(by_value) >= 2  # a grid, bracketed off its edge where the choice sat on one
        chosen = selection.choose(by_value).chosen
        reported = [r for r in runs if r["method"] == method and r["role"] == "report"]
        assert chosen is not None and len(reported) == 2
        assert {r["config"]["method"]["learning_rate"] for r in reported} == {chosen}
    table = pd.read_csv(path.parent / "main_table.csv").astype(str)
    assert table.apply(lambda column: column.str.contains(r"\(n=2\)")).any().any()  # the two reported seeds
    assert not table.apply(lambda column: column.str.contains(r"\(n=3\)")).any().any()  # never the tuning one
    assert "Chosen at the tuning seeds 100 alone" in path.read_text()


def test_every_method_trains_by_one_length_rule_and_records_convergence(first):
    workdir, _ = first
    for r in records(workdir, "gadget_reviews"):
        trainer, convergence = r["config"]["trainer"], r["convergence"]
        assert (trainer["epochs"], trainer["early_stopping_patience"], trainer["eval_steps"]) == (8, 3, 0.05)
        cap = 8 * 9  # 280 training rows in batches of 32: 9 steps an epoch
        assert convergence["steps"] == r["timing"]["train_steps"] <= cap
        assert convergence["stopped_early"] == (convergence["steps"] < cap)
        assert convergence["evaluations"] >= 3 and convergence["judged_by"] == "validation"
        assert convergence["converged"] == (not convergence["validation_still_improving"])
        assert r["rows"]["rows"] == {"validation": 40, "test": 80}


def test_the_report_flags_the_cells_that_did_not_converge(first):
    workdir, path = first
    text = path.read_text()
    budget = text[text.index("## Training budget and convergence"):]
    budget = budget[:budget.index("\n## ", 5)]
    assert (path.parent / "validation_by_step.png").exists() and "validation_by_step.png" in budget
    labels = {"full": "Full FT", "lora": "LoRA r=8", "qlora": "QLoRA r=8"}
    reported = [r for r in records(workdir, "gadget_reviews") if r["role"] == "report"]
    for method, label in labels.items():
        missed = sum(r["convergence"]["converged"] is False for r in reported if r["method"] == method)
        row = next(line for line in budget.splitlines() if line.startswith(f"| {label} "))
        assert ("NOT CONVERGED" in row) == bool(missed), row


def test_the_task_is_named_after_its_file_and_split_by_share(first):
    workdir, path = first
    runs = os.listdir(workdir / "results")
    assert len(runs) >= 12 and all("-tiny-bert-gadget_reviews-s" in r for r in runs), runs
    text = path.read_text()
    assert "gadget_reviews" in text and "train 280, validation 40, test 80" in text  # 400 rows: 20 % and 10 %


def test_a_second_task_gets_its_own_folders_and_a_run_cut_short_is_flagged(first, tmp_path):
    """The second task is cut short on purpose: a patience longer than the run can never stop it, so
    its validation loss is still improving at the cap and the report must say so."""
    workdir, path = first
    before = path.read_text()
    write_reviews_csv(workdir / "kitchen_reviews.csv", rows=300, seed=1)
    short = ["model=tiny-bert", "trainer.batch_size=32", "trainer.epochs=6", "trainer.early_stopping_patience=50",
             "hydra.sweeper.groups=[{method:full,method.learning_rate:'3e-3'}]", "hydra.sweeper.bracket.max_rounds=0",
             "hydra.sweeper.bracket.confirm_seeds='0'", "sweep.report_seeds=[0]",
             "logger=none"]
    second = compare(workdir, workdir / "kitchen_reviews.csv", short)
    assert second.parent.name == f"{SWEEP}-kitchen_reviews" and second.exists()
    assert path.read_text() == before
    assert sorted(os.listdir(workdir / "multirun")) == [f"{SWEEP}-gadget_reviews", f"{SWEEP}-kitchen_reviews"]
    assert "**Not converged:** Full FT." in second.read_text()
    assert all(r["convergence"]["converged"] is False for r in records(workdir, "kitchen_reviews"))



def test_the_documented_seed_overrides_work(tmp_path):
    """Issue 21: the keys docs/data.md gives for the tuning and the reported seeds, run as documented (one
    method, one rate, the jobs short): Hydra takes them, and the runs are at exactly those seeds."""
    doc = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "data.md")).read()
    assert "`seed=100,101` and `hydra.sweeper.bracket.confirm_seeds='0,1,2,3,4,5,6,7,8,9'`" in doc
    write_reviews_csv(tmp_path / "tiny_reviews.csv", rows=400, seed=2)
    command = [sys.executable, "-m", "lab", "-m", f"+sweep={SWEEP}", "dataset=csv",
               f"dataset.path={tmp_path / 'tiny_reviews.csv'}", "dataset.columns.text=review",
               "dataset.columns.label=sentiment", "model=tiny-bert", "logger=none", "trainer.epochs=null",
               "trainer.max_steps=40", "trainer.batch_size=32", "trainer.early_stopping_patience=null",
               "hydra.sweeper.groups=[{method:full,method.learning_rate:'3e-3'}]", "hydra.sweeper.bracket.max_rounds=0",
               "seed=100", "hydra.sweeper.bracket.confirm_seeds='7'"]
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert sorted((r["seed"], r["role"]) for r in records(tmp_path, "tiny_reviews")) == [(7, "report"), (100, "tune")]
