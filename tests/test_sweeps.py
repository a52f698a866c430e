"""Sweeps: every sweep file composes into valid jobs; real sweeps survive failing jobs and kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab.sweep import expand
from conftest import CONF
from lab.config import compose
from sweep_helpers import TINY_OK, TINY_OVERRIDES, finish, lab_multirun, records, summary, tiny_sweep

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
# Jobs per sweep: the grids the sweep files promise.
EXPECTED_JOBS = {"quick": 14, "rank_vs_accuracy": 57, "smoke": 4, "method_comparison": 18,
                 "method_comparison_quick": 9, "model_size": 27,
                 "lora_glue": 40, "lora_rank_targets": 48, "qlora_llama2_7b": 5, "rank_vs_accuracy_tuned": 66,
                 "scaling_variants": 126, "bf16_vs_fp32": 18, "peft_methods": 84}


def sweep_jobs(name):
    """(base config, each job's overrides) of `lab-train -m +sweep=<name>`, without running anything."""
    base = compose([f"+sweep={name}"], hydra=True)
    return base, expand(base.hydra.sweeper.params, base.hydra.sweeper.groups, [])


def job_cells(jobs):
    """(method, rank or 0, seed) of each job, read from its overrides."""
    cells = []
    for job in jobs:
        values = dict(o.split("=", 1) for o in job)
        cells.append((values["method"], int(values.get("rank", 0)), int(values["seed"])))
    return sorted(cells)


def test_every_sweep_file_is_listed():
    assert set(SWEEPS) == set(EXPECTED_JOBS)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_into_valid_distinct_jobs(name):
    _, jobs = sweep_jobs(name)
    assert len(jobs) == EXPECTED_JOBS[name]
    assert len({frozenset(j) for j in jobs}) == len(jobs)
    # Composing is slow (~0.3 s a job): validate one job per shape, i.e. per everything but seed and rank.
    shapes = {}
    for job in jobs:
        shapes.setdefault(tuple(o for o in job if not o.startswith(("seed=", "rank="))), job)
    for job in shapes.values():
        cfg = compose([f"+sweep={name}", *job])  # raises on an invalid job
        # A per-task sweep (method_comparison) carries its task's name, so two tasks never share a folder.
        assert cfg.sweep.name in (name, f"{name}-{cfg.dataset.name}")
        # A rank exactly where the method file names a capacity knob for it.
        assert (cfg.rank is None) == (cfg.method.capacity is None), job


@pytest.mark.parametrize("name", ["method_comparison", "method_comparison_quick"])
def test_method_comparison_brackets_at_tuning_seeds_disjoint_from_the_reported_ones(name):
    """The protocol: rates tried at the tuning seeds only, the chosen one confirmed at the reported seeds
    (which the records' role and the report read from sweep.tune_seeds / sweep.report_seeds)."""
    base, jobs = sweep_jobs(name)
    tune, report = set(base.sweep.tune_seeds), set(base.sweep.report_seeds)
    assert {seed for _, _, seed in job_cells(jobs)} == tune
    bracket = base.hydra.sweeper.bracket
    assert bracket.key == "method.learning_rate" and bracket.metric == "validation_accuracy"
    assert {int(s) for s in str(bracket.confirm_seeds).split(",")} == report and not tune & report
    for method in ("full", "lora", "qlora"):
        rates = {float(dict(o.split("=", 1) for o in job)["method.learning_rate"]) for job in jobs
                 if f"method={method}" in job}
        assert len(rates) == 3
    assert base.trainer.early_stopping_patience and base.trainer.epochs and base.trainer.eval_steps


def test_quick_is_full_once_per_seed_plus_lora_and_qlora_ranks():
    base, jobs = sweep_jobs("quick")
    expected = sorted([("full", 0, s) for s in (0, 1)] + [("lora", r, s) for r in (1, 4, 16, 64) for s in (0, 1)]
                      + [("qlora", r, s) for r in (4, 16) for s in (0, 1)])
    assert job_cells(jobs) == expected
    assert (base.model.name, base.dataset.name) == ("minilm-l6", "movie-sentences")


def test_rank_vs_accuracy_has_full_reference_and_nine_ranks():
    _, jobs = sweep_jobs("rank_vs_accuracy")
    cells = job_cells(jobs)
    assert [seed for method, _, seed in cells if method == "full"] == [0, 1, 2]
    for method in ("lora", "qlora"):
        assert {rank for m, rank, _ in cells if m == method} == {1, 2, 4, 8, 16, 32, 64, 128, 256}


def test_tuned_sweep_tries_each_default_learning_rate_among_three_per_cell():
    base, jobs = sweep_jobs("rank_vs_accuracy_tuned")
    assert (base.model.name, base.dataset.name) == ("minilm-l6", "movie-sentences")
    grids: dict = {}
    for job in jobs:
        values = dict(o.split("=", 1) for o in job)
        grids.setdefault((values["method"], int(values.get("rank", 0))), set()).add(float(values["method.learning_rate"]))
    assert set(grids) == {("full", 0)} | {(m, r) for m in ("lora", "qlora") for r in (1, 4, 16, 64, 256)}
    assert grids[("full", 0)] == {3e-5, 1e-4, 3e-4}
    assert all(lrs == {5e-4, 2e-3, 8e-3} for cell, lrs in grids.items() if cell[0] != "full")
    assert {s for _, _, s in job_cells(jobs)} == {100, 101}  # the tuning seeds; 0-4 are reported


def test_scaling_variants_cover_three_conventions_and_dora():
    _, jobs = sweep_jobs("scaling_variants")
    variants = {(dict(o.split("=", 1) for o in job)["method"], dict(o.split("=", 1) for o in job).get("method.scaling"))
                for job in jobs}
    assert variants == {("full", None), ("dora", None), ("lora", "alpha_2r"), ("lora", "fixed"), ("lora", "rslora")}


def test_command_line_overrides_reach_every_group():
    jobs = expand({"seed": "0,1"}, [{"method": "full"}, {"method": "lora", "rank": "1,4"}], ["seed=5", "model=x"])
    assert jobs == [["seed=5", "method=full", "model=x"], ["seed=5", "method=lora", "rank=1", "model=x"],
                    ["seed=5", "method=lora", "rank=4", "model=x"]]


def test_a_job_in_two_groups_runs_once():
    jobs = expand({}, [{"method": "lora", "rank": "4,8"}, {"method": "lora", "rank": "8,16"}], [])
    assert [j[-1] for j in jobs] == ["rank=4", "rank=8", "rank=16"]


@pytest.mark.parametrize("launcher,target", [
    ("parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher"), ("local_submitit", "LocalLauncher"),
    ("local", "ForkedLocalLauncher")])
def test_launcher_configs_extend_the_plugins(launcher, target):
    cfg = compose([f"hydra/launcher={launcher}"], hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_task == 1 and cfg.hydra.launcher.partition is None


def test_sweep_with_failing_jobs_records_them_and_goes_on(tmp_path_factory):
    sweep = tiny_sweep(tmp_path_factory)
    found = records(sweep["results"])
    statuses = sorted(r["status"] for r in found.values())
    assert statuses == ["diverged", "failed"] + ["ok"] * TINY_OK  # each run once: no duplicate folders
    diverged = next(r for r in found.values() if r["status"] == "diverged")
    assert "nan" in diverged["error"].lower()
    failed = next(r for r in found.values() if r["status"] == "failed")
    assert "reduce_lr_on_plateau requires an eval strategy" in failed["error"]
    counts = summary(sweep["sweep_dir"])["counts"]
    assert counts == {"ok": TINY_OK, "diverged": 1, "failed": 1, "invalid-config": 1}
    assert "rank=0" in sweep["output"] and "invalid-config" in sweep["output"]


def test_rerun_of_a_sweep_skips_ok_runs_and_retries_the_others(tmp_path_factory, tmp_path):
    sweep = tiny_sweep(tmp_path_factory)
    before = records(sweep["results"])
    output = finish(lab_multirun(tmp_path, sweep["results"], tmp_path / "rerun", *TINY_OVERRIDES))
    after = records(sweep["results"])
    assert set(after) == set(before)
    for run_id, record in before.items():
        if record["status"] == "ok":
            assert f"{run_id}: finished earlier (ok), skipped" in output
            assert after[run_id] == record
        else:
            assert f"== {run_id}  [{record['status']}]" in output  # trained again (and failed again)
    assert summary(tmp_path / "rerun")["counts"] == summary(sweep["sweep_dir"])["counts"]


def test_killed_sweep_finishes_on_rerun_with_each_run_once(tmp_path):
    results, sweep_dir = tmp_path / "results", tmp_path / "multirun"
    process = lab_multirun(tmp_path, results, sweep_dir, start_new_session=True)
    deadline = time.time() + 300
    while len(list(results.glob("*/result.json"))) < 2:
        assert process.poll() is None, process.stdout.read()[-4000:]
        assert time.time() < deadline, "no two records within 5 minutes"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = {k: (results / k / "result.json").read_bytes() for k in records(results)}
    assert 2 <= len(done_before) < 4, "the kill came after the sweep had finished: nothing to resume"

    output = finish(lab_multirun(tmp_path, results, sweep_dir))
    after = records(results)
    assert len(after) == 4 and all(r["status"] == "ok" for r in after.values())
    assert sorted(p.parent.name for p in results.glob("*/result.json")) == sorted(after)
    for run_id, data in done_before.items():  # finished before the kill: kept, not retrained
        assert (results / run_id / "result.json").read_bytes() == data
        assert f"{run_id}: finished earlier (ok), skipped" in output
    assert output.count("finished earlier (ok), skipped") == len(done_before)
    assert summary(sweep_dir)["counts"] == {"ok": 4}


def test_local_submitit_runs_each_job_in_its_own_process(tmp_path):
    results, sweep_dir = tmp_path / "results", tmp_path / "multirun"
    groups = "hydra.sweeper.groups=[{method:lora,rank:2},{method:lora,rank:0}]"
    finish(lab_multirun(tmp_path, results, sweep_dir, groups, "hydra/launcher=local_submitit",
                        "hydra.sweeper.max_batch_size=1"))
    assert [r["status"] for r in records(results).values()] == ["ok"]
    assert summary(sweep_dir)["counts"] == {"ok": 1, "invalid-config": 1}
    assert list((sweep_dir / ".submitit").iterdir())  # submitit's per-job folders: the jobs ran through it


@pytest.mark.parametrize("launcher", ["local_submitit", "local"])
def test_local_launchers_keep_n_jobs_running_and_start_the_next_as_one_ends(tmp_path, launcher):
    """Three jobs, two at a time, the second one an invalid config that ends in seconds: the third
    starts as soon as it ends, while the first still trains (batches of two would wait for the first),
    and never more than two run at once; each job is its process's first (a fresh submitit process, or
    a process forked from the server: never a reused worker), its output in its own files."""
    results, sweep_dir = tmp_path / "results", tmp_path / "multirun"
    groups = "hydra.sweeper.groups=[{method:lora,rank:2},{method:lora,rank:0},{method:qlora,rank:4}]"
    finish(lab_multirun(tmp_path, results, sweep_dir, groups, f"hydra/launcher={launcher}",
                        "hydra.launcher.array_parallelism=2"))
    assert summary(sweep_dir)["counts"] == {"ok": 2, "invalid-config": 1}
    spans = {}
    for path in (sweep_dir / ".progress").glob("*.json"):
        state = json.loads(path.read_text())
        spans[state["num"]] = (state["at"], state["at"] + state["seconds"])
    assert sorted(spans) == [0, 1, 2]
    assert spans[2][0] < spans[0][1], spans  # the third began while the first still ran...
    assert spans[2][0] >= spans[1][1] - 1.0, spans  # ...once the second had ended: two slots
    for record in records(results).values():
        assert record["timing"]["startup_from"] == "process start", record["timing"]
    if launcher == "local_submitit":
        assert len(list((sweep_dir / ".submitit").iterdir())) >= 3  # one submitit process per job
    else:
        assert "rank=0" in (sweep_dir / ".jobs" / "1.err").read_text()  # the invalid config said why, in its file
        assert sorted(p.name for p in (sweep_dir / ".jobs").glob("*.out")) == ["0.out", "1.out", "2.out"]


def test_local_job_past_its_timeout_is_stopped_and_recorded_as_crashed(tmp_path):
    results, sweep_dir = tmp_path / "results", tmp_path / "multirun"
    output = finish(lab_multirun(tmp_path, results, sweep_dir, "hydra.sweeper.groups=[{method:lora,rank:2}]",
                                 "hydra/launcher=local", "hydra.launcher.timeout_min=0.001"))
    assert summary(sweep_dir)["counts"] == {"crashed": 1}
    assert "stopped after its timeout of 0.001 min" in output
    assert not list(results.glob("*/result.json"))


def test_local_launcher_refuses_a_bad_setting(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab", "-m", "+sweep=smoke", "hydra/launcher=local",
                           "hydra.launcher.array_parallelism=0", f"paths.results={tmp_path}",
                           f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "hydra.launcher.array_parallelism=0: a whole number >= 1" in proc.stderr


def test_bracketing_extends_an_edge_choice_and_confirms_it_with_more_seeds(tmp_path):
    """A two-value grid always chooses an edge: one round adds the neighbour at the base seeds, then
    the chosen value runs at the confirming seed (real runs; the records decide, not the test)."""
    results, sweep_dir = tmp_path / "results", tmp_path / "multirun"
    command = [sys.executable, "-m", "lab", "-m", "+sweep=smoke", f"paths.results={results}",
               f"hydra.sweep.dir={sweep_dir}", "trainer.max_steps=40", "trainer.batch_size=16",
               "dataset.sizes={train: 320, validation: 64, test: 64}",
               "hydra.sweeper.params.seed='0,1'", "hydra.sweeper.groups=[{method:full,method.learning_rate:'1e-3,4e-3'}]",
               "hydra.sweeper.bracket={key: method.learning_rate, metric: validation_accuracy, max_rounds: 1, "
               "confirm_seeds: '2'}"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = summary(sweep_dir)["jobs"]
    rates = {o.partition("=")[2] for job in jobs for o in job["overrides"] if o.startswith("method.learning_rate=")}
    assert len(jobs) == 2 * 2 + 2 + 1, [j["overrides"] for j in jobs]
    assert rates & {"0.00025", "0.016"} and len(rates) == 3, rates
    confirmed = [j for j in jobs if "seed=2" in j["overrides"]]
    assert len(confirmed) == 1 and all(j["status"] == "ok" for j in jobs)
    assert "bracket round 1: 2 jobs" in proc.stdout + proc.stderr
