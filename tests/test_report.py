"""The report: cells, choices, intervals and claims on hand-built records (no training), and the whole
pipeline on a real tiny sweep, down to the HTML page a browser opens."""

import json
import os
import shutil
import subprocess

import re

import numpy as np
import pandas as pd
import pytest

from analysis import cells as cellmod
from analysis import claims, report
from analysis.collect import Collection, to_frame
from analysis.rules import Rules
from analysis.sections import answer, results
from lab.rows import row_ids, write_rows
from sweep_helpers import tiny_sweep


def record(method, rank, seed, lr, test, validation, health="learned", adapter_params=None):
    adapter = method != "full"
    return {
        "run_id": f"{method}-r{rank}-lr{lr}-s{seed}", "status": "ok", "health": health, "method": method,
        "rank": rank if adapter else None, "model": "minilm-l6", "dataset": "movie-sentences", "seed": seed,
        "params": {"trainable": 1000, "total": 22_700_000, "adapter": adapter_params or (rank * 100 if adapter else 0)},
        "metrics": {"test_accuracy": test, "validation_accuracy": validation},
        "health_detail": {"majority_share": 0.511, "label_entropy": 0.693},
        "memory": {"unit": "bytes", "weights": {"frozen_float32": 90e6}, "gradients": 1e6, "optimizer_state": {"exp_avg": 1e6},
                   "activations": 2e6, "buffers": 1e3, "ledger_total": 90e6 + 4e6 + 1e3},
        "splits": {"train": 9066, "validation": 500, "test": 1000},
        "config": {"method": {"name": method, "learning_rate": lr, "targets": "qv" if adapter else None},
                   "trainer": {"max_steps": 100, "batch_size": 16}},
    }


def cell_runs(method, rank, per_lr, seeds=5, pattern=(0, 2, -2, 1, -1)):
    """per_lr: {lr: (test, validation)}, each seed off by pattern[seed] x 0.2 points."""
    out = []
    for lr, (test, validation) in per_lr.items():
        for seed in range(seeds):
            wobble = pattern[seed] * 0.002
            out.append(record(method, rank, seed, lr, test + wobble, validation + wobble))
    return out


def frame(records):
    return to_frame(records)


def test_a_collapsed_run_is_never_averaged_and_its_rate_never_chosen():
    records = cell_runs("lora", 16, {2e-3: (0.78, 0.77), 8e-3: (0.80, 0.79)})
    records[-1].update(health="collapsed", metrics={"test_accuracy": 0.511, "validation_accuracy": 0.50})
    (cell,) = cellmod.build(frame(records), "test_accuracy")
    assert cell.lr == 2e-3 and cell.choice.means.keys() == {2e-3}
    assert cell.choice.edge == "low"  # 8e-3 is not eligible, but was tried: the choice sits on the low edge
    assert len(cell.scores()) == 5 and min(cell.scores().values()) > 77


def test_a_single_learning_rate_is_not_tuned_and_drops_only_collapsed_runs():
    records = cell_runs("lora", 4, {2e-3: (0.76, 0.75)})
    records[0]["health"] = "collapsed"
    (cell,) = cellmod.build(frame(records), "test_accuracy")
    assert not cell.tuned and cell.lr == 2e-3 and len(cell.scores()) == 4
    assert "not tuned, 1 collapsed" in results.score_text(cell)


def test_main_table_has_one_row_per_rank_adapter_params_and_a_paired_difference():
    records = (cell_runs("full", None, {1e-4: (0.795, 0.78)}) + cell_runs("lora", 16, {2e-3: (0.79, 0.78)})
               + cell_runs("qlora", 16, {2e-3: (0.777, 0.77)}))
    cells = cellmod.build(frame(records), "test_accuracy")
    table = results.main_table(cells)
    assert list(table["Rank"]) == ["Full FT", "r=16"]
    assert table.loc[1, "Adapter params"] == "1,600"
    assert "paired t, 4 df" in table.loc[1, "QLoRA − LoRA"] and "-1.30" in table.loc[1, "QLoRA − LoRA"]
    assert table.loc[0, "LoRA"] == "" and "(n=5)" in table.loc[0, "Full FT"]


def test_claims_need_five_seeds_and_name_their_test():
    few = cell_runs("full", None, {1e-4: (0.795, 0.78)}, seeds=3) + cell_runs("lora", 16, {2e-3: (0.79, 0.78)}, seeds=3)
    verdict = claims.judge(cellmod.build(frame(few), "test_accuracy"))[0]
    assert verdict["verdict"] == "not enough seeds" and "n=3" in verdict["evidence"][0]
    # Changed with issue 20: "held" needs non-inferiority shown at the margin, not an interval that holds 0.
    enough = cell_runs("full", None, {1e-4: (0.795, 0.78)}) + cell_runs("lora", 16, {2e-3: (0.794, 0.78)},
                                                                          pattern=(1, 2, -1, 1, -2))
    verdict = claims.judge(cellmod.build(frame(enough), "test_accuracy"))[0]
    assert verdict["verdict"] == "held" and "paired t, 4 df" in verdict["evidence"][0]
    assert "non-inferiority at −1" in verdict["evidence"][0] and "Holm" in verdict["evidence"][0]
    worse = cell_runs("full", None, {1e-4: (0.795, 0.78)}) + cell_runs("lora", 16, {2e-3: (0.75, 0.74)})
    assert claims.judge(cellmod.build(frame(worse), "test_accuracy"))[0]["verdict"] == "not held"


def test_an_interval_that_holds_zero_is_not_similarity():
    """A noisy cell whose interval holds 0 (the old "cannot tell apart") is inconclusive, not similar."""
    noisy = cell_runs("full", None, {1e-4: (0.787, 0.78)}) + cell_runs("qlora", 16, {2e-3: (0.77, 0.76)},
                                                                         pattern=(10, -12, 8, -9, 3))
    verdict = claims.judge(cellmod.build(frame(noisy), "test_accuracy"))[1]
    assert verdict["verdict"] == "inconclusive" and "equivalence within ±1" in verdict["evidence"][0]


def _ladder(ladder):
    return [r for rank, acc, pattern in ladder for r in cell_runs("qlora", rank, {2e-3: (acc, acc)}, pattern=pattern)]


def test_gains_diminish_needs_a_shown_gain_and_equivalence_above():
    ladder = ((1, 0.72, (0, 2, -2, 1, -1)), (4, 0.76, (1, -1, 0, 2, -2)), (16, 0.778, (-2, 1, 2, 0, -1)),
              (64, 0.779, (2, 0, -1, -2, 1)))
    verdict = claims.gains_diminish(cellmod.build(frame(_ladder(ladder)), "test_accuracy"))
    assert verdict["verdict"] == "held" and any(e.startswith("r* = 16") for e in verdict["evidence"])
    assert "equivalence within ±1" in " ".join(verdict["evidence"])


def test_a_flat_ladder_without_a_shown_gain_is_not_a_plateau():
    """The issue's first bullet: no step gains, so the old rule set r* = 1 and said held."""
    flat = ((1, 0.778, (0, 2, -2, 1, -1)), (4, 0.778, (1, -1, 0, 2, -2)), (16, 0.778, (-2, 1, 2, 0, -1)),
            (64, 0.778, (2, 0, -1, -2, 1)))
    verdict = claims.gains_diminish(cellmod.build(frame(_ladder(flat)), "test_accuracy"))
    assert verdict["verdict"] == "inconclusive" and "no rank run has both" in verdict["evidence"][-1]


def test_beyond_256_is_not_testable_without_a_rank_above_it():
    ladder = ((1, 0.72, (0, 2, -2, 1, -1)), (16, 0.778, (-2, 1, 2, 0, -1)), (256, 0.779, (2, 0, -1, -2, 1)))
    cells = cellmod.build(frame(_ladder(ladder)), "test_accuracy")
    assert claims.judge(cells)[2]["verdict"] == "not testable"
    above = _ladder(ladder + ((1024, 0.7785, (1, -1, 0, 2, -2)),))
    assert claims.judge(cellmod.build(frame(above), "test_accuracy"))[2]["verdict"] == "held"


def _with_ledger(records, total):
    for r in records:
        r["memory"] = {**r["memory"], "ledger_total": total}
    return records


def _issue_cells():
    """The issue's tuned sweep: full FT, a noisy QLoRA r=4 (mean 73.48, SD 5.19) and a steady LoRA r=16."""
    def runs(method, rank, scores, lr, total):
        out = [record(method, rank, seed, lr, s / 100, s / 100) for seed, s in enumerate(scores)]
        return _with_ledger(out, total)
    records = (runs("full", None, [80.1, 79.9, 78.4, 78.0, 77.1], 1e-4, 542.8e6)
               + runs("qlora", 4, [75.6, 76.2, 75.9, 75.5, 64.2], 8e-3, 207.0e6)
               + runs("lora", 16, [79.3, 79.6, 78.8, 78.5, 77.9], 2e-3, 246.2e6))
    return cellmod.build(frame(records), "test_accuracy")


def test_the_answer_never_recommends_a_cell_that_fails_non_inferiority():
    cells = _issue_cells()
    full = cellmod.find(cells, "full")
    text = answer.recommendation(cells, full, Rules())
    assert "**Recommended: LoRA r=16**" in text and "QLoRA r=4" not in text
    assert "seed-paired t test" in answer.fallback_note(cells, full, Rules())  # these records kept no rows
    table = answer.rows(cells, full, Rules())
    row = table[table["Method"] == "QLoRA r=4"].iloc[0]
    assert row["Seed SD"] == "5.19" and row["Non-inferior at −1?"].startswith("inconclusive")
    sizes = answer.sample_sizes(cells, full, Rules())
    assert list(sizes["Comparison"]) == ["QLoRA r=4 − full FT"] and sizes.iloc[0]["Seeds needed"].startswith("none")


def test_with_nothing_non_inferior_the_answer_says_so():
    cells = [c for c in _issue_cells() if c.label != "LoRA r=16"]
    text = answer.recommendation(cells, cellmod.find(cells, "full"), Rules())
    assert "No cell passes" in text and "Recommended" not in text


def test_no_interval_in_the_answer_leaves_the_metric_range():
    """`make demo`: LoRA r=4 77.10 [45.33, 108.87] (n=2) and still a cheapest method."""
    records = cell_runs("full", None, {1e-4: (0.99, 0.98)}, seeds=2) + [
        record("lora", 4, 0, 2e-3, 0.946, 0.94), record("lora", 4, 1, 2e-3, 0.996, 0.99)]
    cells = cellmod.build(frame(records), "test_accuracy")
    table = answer.rows(cells, cellmod.find(cells, "full"), Rules())
    numbers = [float(x) for cell in table["Score"] for x in re.findall(r"-?\d+\.\d+", cell)]
    assert max(numbers) <= 100 and "*" in table.iloc[1]["Score"]
    assert "Recommended" not in answer.recommendation(cells, cellmod.find(cells, "full"), Rules())


def test_per_row_outputs_pair_the_difference_on_rows_and_seeds(tmp_path):
    """Records with a rows file: the two-level bootstrap; a rows file changed after its record: the seed t."""
    ids = row_ids(f"row {i}" for i in range(200))
    records = []
    for method, rank, base in (("full", None, 0.80), ("lora", 16, 0.79)):
        for seed in range(5):
            rng = np.random.default_rng(seed)
            correct = rng.random(200) < base + 0.01 * (seed - 2)
            run = record(method, rank, seed, 2e-3, correct.mean(), correct.mean())
            folder = tmp_path / run["run_id"]
            run["rows"] = write_rows(str(folder), pd.DataFrame({"split": "test", "row_id": ids, "gold": 1,
                                                                "pred": correct.astype(int), "p_gold": 0.5,
                                                                "correct": correct}))
            run["path"] = str(folder / "result.json")
            records.append(run)
    full, lora = cellmod.build(frame(records), "test_accuracy")
    diff = lora.compare(full)
    assert diff.method.startswith("two-level bootstrap, 5 paired seeds x 200 rows") and diff.rows == 200
    assert "another training seed and another test sample" in results.paired_text(lora, full)
    with open(tmp_path / records[-1]["run_id"] / "rows.parquet", "ab") as f:
        f.write(b"changed")
    full, lora = cellmod.build(frame(records), "test_accuracy")
    assert lora.compare(full).method == "paired t, 4 df"


def test_a_bad_margin_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        report.main(["--results", "nowhere", "--out", "nowhere", "--margin", "-1"])
    assert exit_.value.code == 2 and "--margin: '-1': the margin is a positive number" in capsys.readouterr().err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    sweep = tiny_sweep(tmp_path_factory)
    out = tmp_path_factory.mktemp("report")
    summary = report.read_sweep(str(sweep["sweep_dir"]))
    collection, notes = report.select_sweep(Collection(*_collect(sweep)), summary)
    return report.build(collection, str(out), "tiny sweep", sweep=summary, sweep_notes=notes), out


def _collect(sweep):
    from analysis.collect import collect

    collection = collect(str(sweep["results"]))
    return collection.runs, collection.problems


def test_the_report_of_a_real_sweep_opens_with_its_setup_and_names_every_run_state(built):
    paths, out = built
    text = open(paths["md"]).read()
    assert text.index("## Setup") < text.index("## Results")
    for needed in ("tiny-bert", "synthetic-cls", "8 steps x batch 16", "train 96, validation 32, test 32",
                   "Runs by status and health", "diverged", "failed", "one-sided binomial test",
                   "| Decision rules", "margin 1 point;", "Holm's correction", "Rule: a cell is recommended only if"):
        assert needed in text, needed
    for name in ("runs.csv", "claims.csv", "main_table.csv", "report.html", "loss_curves.png", "memory_ledger.png"):
        assert (out / name).exists(), name
    html = open(paths["html"]).read()
    assert "data:image/png;base64," in html and 'src="loss_curves.png"' not in html


CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute('data-check', JSON.stringify({images: images.length, broken, errors: window.__errors,
                                                           tables: document.querySelectorAll('table').length}));
});
</script>"""
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_the_html_report_renders_every_figure_in_a_browser(built, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (CI installs it)")
    paths, out = built
    page = tmp_path / "checked.html"
    page.write_text(open(paths["html"]).read().replace("<head>", "<head>" + CHECK, 1))
    flags = [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    check = json.loads(dom.stdout.split('data-check="')[1].split('"')[0].replace("&quot;", '"'))
    assert check["images"] >= 3 and check["broken"] == 0 and check["errors"] == [] and check["tables"] >= 4, check
    shot = out / "report_screenshot.png"
    subprocess.run([browser, *flags, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_cells_are_split_by_what_the_method_files_set_and_labelled_by_them():
    """No hand list: a method the suite does not know splits on its own peft options, is labelled by its
    file (through the record), and a LoRA record written before peft_type existed shares the cell of
    one written after (the same run)."""
    vera = cell_runs("vera", 256, {1e-2: (0.75, 0.74)}, seeds=2)
    for r in vera:
        r["config"]["method"].update(label="VeRA", peft_type="VERA", capacity="r", peft={"d_initial": 0.1})
    other = cell_runs("vera", 256, {1e-2: (0.70, 0.69)}, seeds=2)
    for r in other:
        r["run_id"] += "-d1"
        r["config"]["method"].update(label="VeRA", peft_type="VERA", capacity="r", peft={"d_initial": 1.0})
    old, new = cell_runs("lora", 8, {2e-3: (0.78, 0.77)}, seeds=2), cell_runs("lora", 8, {2e-3: (0.78, 0.77)}, seeds=2)
    for r in new:
        r["run_id"] += "-new"
        r["seed"] += 2
        r["config"]["method"].update(label="LoRA", peft_type="LORA", capacity="r", peft={})
    four_bit = cell_runs("ia3", 1, {1e-2: (0.7, 0.7)}, seeds=2)
    for r in four_bit:
        r["rank"] = None  # IA3 has no capacity knob
        r["config"]["method"].update(label="IA³", peft_type="IA3", quant={"type": "nf4", "double_quant": True})
    cells = cellmod.build(frame(vera + other + old + new + four_bit), "test_accuracy")
    by_label = sorted((c.label, len(c.runs)) for c in cells)
    assert by_label == [("IA³ (4-bit base)", 2), ("LoRA r=8", 4), ("VeRA r=256", 2), ("VeRA r=256", 2)]
    assert {c.key.get("config.method.peft.d_initial") for c in cells if c.method == "vera"} == {0.1, 1.0}
    assert [c.method for c in cells][0] == "lora" and "ia3+4bit" in {c.method for c in cells}


# ---- issue 21: a report is safe to open and to interrupt, and says what it cannot do ------------------

PAYLOAD = "document.body.appendChild(document.createElement('pwned-marker'))"
HOSTILE = {"dataset": f"<script>{PAYLOAD}</script>", "model": f"<img src=x onerror=\"{PAYLOAD}\">"}


def hostile_store(folder, title_tag=""):
    records = cell_runs("lora", 8, {2e-3: (0.78, 0.77)}) + cell_runs("full", None, {2e-3: (0.80, 0.79)})
    for r in records:
        r.update(HOSTILE)
        r["config"]["trainer"]["epochs"] = None
        r["error"] = f"<svg onload=\"{PAYLOAD}\">"
        run = folder / r["run_id"]
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps(r))
    return folder


def scripts_and_handlers(page: str) -> tuple[int, list[str]]:
    """<script> elements and on* attributes of a page, as an HTML parser (a browser's first step) sees them."""
    from html.parser import HTMLParser

    found = {"scripts": 0, "handlers": []}

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found["scripts"] += tag == "script"
            found["handlers"] += [name for name, _ in attrs if name.startswith("on")]

    Parser().feed(page)
    return found["scripts"], found["handlers"]


def test_a_hostile_name_is_text_in_the_html_report_and_no_script_runs(tmp_path):
    results = hostile_store(tmp_path / "results")
    out = tmp_path / "report"
    report.main(["--results", str(results), "--out", str(out), "--title", f"<script>{PAYLOAD}</script>",
                 "--wandb", "no"])
    page = (out / "report.html").read_text()
    assert scripts_and_handlers(page) == (0, [])
    assert "&lt;script&gt;" in page and "<sub>" in page  # the names shown as text; layout tags kept
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (CI installs it); the parser check above ran")
    flags = [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", (out / "report.html").as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert "<table" in dom.stdout and "<pwned-marker" not in dom.stdout


def test_a_killed_report_leaves_the_previous_one_whole(tmp_path):
    import signal
    import sys
    import time

    results = hostile_store(tmp_path / "results")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}

    def command(title):
        return [sys.executable, "-m", "analysis", "report", "--results", str(results), "--out", str(out),
                "--title", title, "--wandb", "no"]

    subprocess.run(command("generation-A"), check=True, capture_output=True, env=env, timeout=300)
    for delay in (1.0, 2.0, 3.0, 4.0, 6.0):
        proc = subprocess.Popen(command(f"generation-{delay}"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
        generation = md.splitlines()[0].removeprefix("# ")
        assert generation.startswith("generation-") and len(page) > 1000 and page.endswith("</html>\n")
        assert f"<title>{generation}</title>" in page  # the page and the Markdown of one report


@pytest.mark.parametrize("case", ["missing", "empty", "all-not-records", "out-is-a-file", "out-is-foreign"])
def test_the_report_answers_bad_input_in_one_line(tmp_path, case):
    import sys

    results, out = tmp_path / "results", tmp_path / "out"
    if case != "missing":
        results.mkdir()
    if case == "all-not-records":
        for i in range(3):
            (results / f"run{i}").mkdir()
            (results / f"run{i}" / "result.json").write_text("[]")
    if case.startswith("out-"):
        hostile_store(results)
        if case == "out-is-a-file":
            out.write_text("keep me")
        else:
            out.mkdir()
            (out / "thesis.tex").write_text("keep me")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", "--results", str(results), "--out", str(out),
                           "--wandb", "no"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # (HF_HUB_OFFLINE makes the kernels package print a notice when bitsandbytes loads: not ours.)
    [line] = [x for x in proc.stderr.strip().splitlines() if "publisher trust check" not in x]
    says = {"missing": "an existing results folder", "empty": "at least one run record",
            "all-not-records": "not a run record", "out-is-a-file": "(this is a file)", "out-is-foreign": "thesis.tex"}
    assert line.startswith("error:") and says[case] in line
    if case.startswith("out-"):
        assert "keep me" in (out.read_text() if out.is_file() else (out / "thesis.tex").read_text())


def test_a_sweep_whose_runs_all_failed_gets_a_report_naming_them(tmp_path):
    from omegaconf import OmegaConf

    from lab.config import compose

    config = OmegaConf.to_container(compose(["model=tiny-bert", "dataset=synthetic-cls", "logger=none"]), resolve=True)
    for seed in range(3):
        folder = tmp_path / "results" / f"lora-r8-s{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({
            "run_id": f"lora-r8-s{seed}", "status": "failed", "method": "lora", "rank": 8, "model": "tiny-bert",
            "dataset": "synthetic-cls", "seed": seed, "error": f"RuntimeError: boom {seed}", "config": config}))
    built = report.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--wandb", "no"])
    text = open(built["md"]).read()
    assert "3 runs: 3 failed" in text and all(f"RuntimeError: boom {s}" in text for s in range(3))


def test_on_imbalanced_labels_the_report_leads_with_macro_f1_and_says_why(tmp_path):
    records = cell_runs("lora", 8, {2e-3: (0.91, 0.90)}) + cell_runs("full", None, {2e-3: (0.92, 0.91)})
    for r in records:
        r["health_detail"]["majority_share"] = 0.9
        r["metrics"].update(test_macro_f1=r["metrics"]["test_accuracy"] - 0.3,
                            validation_macro_f1=r["metrics"]["validation_accuracy"] - 0.3)
        r["config"]["trainer"]["epochs"] = None
    frame = to_frame(records)
    assert report.choose_metric(frame, "auto") == "test_macro_f1"
    assert report.choose_metric(frame, "test_accuracy") == "test_accuracy"
    built = report.build(Collection(frame), str(tmp_path / "out"), "imbalanced")
    text = open(built["md"]).read()
    assert built["metric"] == "test_macro_f1" and "imbalanced (the most frequent class is 90 %" in text
    balanced = to_frame(cell_runs("lora", 8, {2e-3: (0.78, 0.77)}))
    assert report.choose_metric(balanced, "auto") == "test_accuracy"
