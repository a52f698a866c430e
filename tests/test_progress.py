"""A multirun's progress lines: one per job state change with the totals, for the basic, joblib and
submitit launchers and the forked local one (real sweeps of tiny runs)."""

import json
import re

import pytest

from hydra_plugins.lab_sweeps.progress import FOLDER, Watcher, clock
from sweep_helpers import finish, lab_multirun

TWO_JOBS = "hydra.sweeper.groups=[{method:lora,rank:2},{method:lora,rank:2,trainer.lr_scheduler:reduce_lr_on_plateau}]"
TOTALS = re.compile(r"^\[sweep (\d+)/(\d+) done, (\d+) running, (\d+) failed, (\d+) left \| \d+m\d\ds(, ETA \d+m\d\ds)?\] ")


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=local_submitit", "hydra.launcher.array_parallelism=2"],
                                      ["hydra/launcher=local", "hydra.launcher.array_parallelism=2"]],
                         ids=["basic", "parallel", "local_submitit", "local"])
def test_each_job_prints_its_start_its_end_and_the_totals(tmp_path, launcher):
    output = finish(lab_multirun(tmp_path, tmp_path / "results", tmp_path / "multirun", TWO_JOBS, *launcher))
    lines = [line for line in output.splitlines() if TOTALS.match(line)]
    assert any(line.endswith("started seed=0 method=lora rank=2") for line in lines), output[-3000:]
    finished = [line for line in lines if "] finished seed=0 method=lora rank=2: test_accuracy " in line]
    # A scheduler that needs evaluation, given none: valid config, refused by transformers at setup.
    failed = [line for line in lines if "] FAILED seed=0 method=lora rank=2 trainer.lr_scheduler=reduce_lr_on_plateau: "
                                             "failed: " in line]
    assert len(finished) == 1 and len(failed) == 1, "\n".join(lines)
    assert re.search(r" in \d+ s$", finished[0])
    done, total, running, failures, left = map(int, TOTALS.match(lines[-1]).groups()[:5])
    assert (done, total, running, failures, left) == (2, 2, 0, 1, 0)


def test_totals_and_eta_from_the_state_files(tmp_path, capsys):
    folder = tmp_path / FOLDER
    folder.mkdir()
    (tmp_path / "sweep_summary.json").write_text(json.dumps({"jobs_total": 5}))
    watcher = Watcher(str(tmp_path))
    now = watcher.began

    def state(num, **fields):
        (folder / f"{num}.json").write_text(json.dumps({"num": num, "job": f"seed={num}", **fields}))

    state(0, state="finished", at=now - 100, seconds=100.0, status="ok", headline=["test_accuracy", 0.8])
    state(1, state="failed", at=now - 10, seconds=10.0, status="oom", error="OutOfMemoryError: CUDA")
    state(2, state="started", at=now - 40)
    watcher.poll()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[sweep 1/5 done, 0 running, 0 failed, 4 left")
    assert lines[0].endswith("finished seed=0: test_accuracy 0.8000 in 100 s")
    assert "FAILED seed=1: oom: OutOfMemoryError: CUDA (in 10 s)" in lines[1]
    # 2 jobs left at the mean trained time (100 s) and 60 s of the running one, on one slot at a time.
    assert lines[2].startswith("[sweep 2/5 done, 1 running, 1 failed, 2 left") and "ETA 4m20s" in lines[2]
    watcher.poll()
    assert capsys.readouterr().out == ""  # nothing changed, nothing printed
    assert clock(3725) == "1h02m"


def test_bitsandbytes_notice_about_the_kernels_hub_package_is_dropped_and_other_warnings_kept():
    import logging

    import lab  # noqa: F401  (installs the filter)

    def record(msg):
        return logging.LogRecord("bitsandbytes.backends.cpu.ops", logging.WARNING, __file__, 1, msg, None, None)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert not logger.filter(record("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ..."))
    assert logger.filter(record("some other bitsandbytes warning"))


def test_a_job_state_says_skipped_finished_or_failed_from_what_the_job_returned():
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.lab_sweeps.progress import job_state

    def ended(value, status=JobStatus.COMPLETED):
        return JobReturn(status=status, _return_value=value)

    ok = {"status": "ok", "metrics": {"test_accuracy": 0.75}, "timing": {"finished_at": "2026-01-02T10:00:00+00:00"}}
    assert job_state(ended(ok), "2026-01-02T09:59:00+00:00")["headline"] == ("test_accuracy", 0.75)
    assert job_state(ended(ok), "2026-01-02T10:05:00+00:00")["state"] == "skipped"  # an earlier sweep's record
    assert job_state(ended({"status": "oom", "error": "OutOfMemoryError: CUDA\nmore"}), None) == \
        {"state": "failed", "status": "oom", "error": "OutOfMemoryError: CUDA"}
    assert job_state(ended(None), None)["status"] == "invalid-config"
    assert job_state(ended(RuntimeError("boom"), JobStatus.FAILED), None)["status"] == "crashed"
