"""The README's workflow "Compare the methods on your own data", end to end on CSV files made here:
the documented sweep and report commands, the task named after its file everywhere, and a second
task that never touches the first one's folders."""

import os
import subprocess
import sys

import numpy as np
import pytest

# What the README's command adds to stay a test: the tiny model, short runs, two seeds, jobs in one process.
FAST = ["model=tiny-bert", "trainer.max_steps=120", "trainer.batch_size=32", "trainer.logging_steps=20",
        "method.learning_rate=5e-3",
        "hydra.sweeper.params.seed='0,1'", "hydra/launcher=basic", "logger=none"]


def write_csv(path, rows: int, seed: int) -> None:
    """Two classes, each with its own keywords hidden among filler words of tiny-bert's vocabulary."""
    rng = np.random.default_rng(seed)
    lines = ["review,sentiment"]
    for i in range(rows):
        label = i % 2
        words = list(rng.choice(5, size=3) + 5 * label) + list(rng.choice(np.arange(50, 200), size=12))
        lines.append(" ".join(f"w{w}" for w in rng.permutation(words)) + f",{'good' if label else 'bad'}")
    path.write_text("\n".join(lines) + "\n")


def compare(workdir, csv_path):
    command = [sys.executable, "-m", "lab", "-m", "+sweep=method_comparison", "dataset=csv",
               f"dataset.path={csv_path}", "dataset.columns.text=review", "dataset.columns.label=sentiment", *FAST]
    sweep = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1200)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    report = subprocess.run([sys.executable, "-m", "analysis", "report", "--results", "results",
                             "--sweep", f"multirun/method_comparison-{stem}"], cwd=workdir, capture_output=True,
                            text=True, timeout=1200)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return workdir / "reports" / f"method_comparison-{stem}" / "report.md"


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("own-task")
    write_csv(workdir / "gadget_reviews.csv", rows=400, seed=0)
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


def test_the_task_is_named_after_its_file_and_split_by_share(first):
    workdir, path = first
    runs = os.listdir(workdir / "results")
    assert len(runs) == 6 and all("-tiny-bert-gadget_reviews-s" in r for r in runs), runs
    text = path.read_text()
    assert "gadget_reviews" in text and "train 280, validation 40, test 80" in text  # 400 rows: 20 % and 10 %


def test_a_second_task_gets_its_own_folders_and_leaves_the_first_alone(first, tmp_path):
    workdir, path = first
    before = path.read_text()
    write_csv(workdir / "kitchen_reviews.csv", rows=300, seed=1)
    second = compare(workdir, workdir / "kitchen_reviews.csv")
    assert second.parent.name == "method_comparison-kitchen_reviews" and second.exists()
    assert path.read_text() == before
    assert sorted(os.listdir(workdir / "multirun")) == ["method_comparison-gadget_reviews",
                                                       "method_comparison-kitchen_reviews"]


def test_the_readmes_seed_override_works(tmp_path):
    """Issue 21: the documented key (docs/data.md) for the seeds of this comparison, run as documented (one seed here, the
    jobs short): Hydra takes it, and every method runs at exactly those seeds."""
    import json
    import re

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "data.md")).read()
    [documented] = re.findall(r"\| `(\S+)=[\d,]+` \| the seeds \(default", readme)
    write_csv(tmp_path / "tiny_reviews.csv", rows=120, seed=2)
    fast = [o for o in FAST if not o.startswith("hydra.sweeper.params.seed")]
    command = [sys.executable, "-m", "lab", "-m", "+sweep=method_comparison", "dataset=csv",
               f"dataset.path={tmp_path / 'tiny_reviews.csv'}", "dataset.columns.text=review",
               "dataset.columns.label=sentiment", *fast, "trainer.max_steps=2", f"{documented}=7"]
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    summary = json.loads((tmp_path / "multirun" / "method_comparison-tiny_reviews" / "sweep_summary.json").read_text())
    records = [json.load(open(job["record"])) for job in summary["jobs"]]
    assert sorted((r["method"], r["seed"]) for r in records) == [("full", 7), ("lora", 7), ("qlora", 7)]
