"""Issue 14: bad input and faults, as a new user or an attacker would try them, on tiny runs."""

import errno
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_run
from lab import record as rec
from lab import train
from lab.config import ConfigError, validate
from lab.paths import SLUG_MAX, slug
from lab.train import run

# A few steps on a few rows: these tests need records and exit codes, not accuracy.
BASE = ["model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=5", "logger=none", "rank=2",
        "dataset.sizes.train=64", "dataset.sizes.validation=16", "dataset.sizes.test=16", "trainer.batch_size=16"]


def files_under(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


# ---- names that enter a path ------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("movie-sentences", "movie-sentences"),
    ("smollm2-135m", "smollm2-135m"),
    ("org/data", "org_data"),
    ("..", "_"),
    ("../../x", "_.._x"),
    ("x/../../../escaped", "x_.._.._.._escaped"),
    ("my data (v2)", "my_data_v2_"),
    ("données-é", "donn_es-_"),
])
def test_the_one_slug_rule(name, expected):
    assert slug(name) == expected


def test_a_300_byte_name_gives_a_bounded_folder_name():
    cfg = validate(compose_run([*BASE, "dataset.name='" + "é" * 150 + "'"]))
    rid = rec.run_id(cfg)
    assert len(rid.encode()) < 255 and "/" not in rid
    assert len(slug("é" * 150 + "x" * 300)) <= SLUG_MAX


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", ""])
def test_names_with_control_characters_are_rejected(name):
    cfg = compose_run(BASE)
    OmegaConf.update(cfg, "dataset.name", name)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.key == "dataset.name"


def test_no_run_id_can_leave_the_results_folder(tmp_path):
    for rid in ("..", "a/../../b", "/etc", "."):
        with pytest.raises(ValueError, match="not one folder name"):
            rec.record_path(str(tmp_path), rid)


@pytest.mark.parametrize("name", ["x/../../../escaped", "org/data", "ü" * 120])
def test_a_hostile_name_stays_inside_results_and_the_record_keeps_it(tmp_path, name):
    results = tmp_path / "out" / "results"
    record = run(compose_run([*BASE, f"dataset.name='{name}'"], results=results))
    assert record["status"] == "ok" and record["dataset"] == name
    written = files_under(tmp_path)
    assert written and all(path.startswith(str(results) + os.sep) for path in written)
    [stored] = results.glob("*/result.json")  # one level: the analysis finds it
    assert json.loads(stored.read_text())["config"]["dataset"]["name"] == name


# ---- failures exit non-zero -------------------------------------------------------------------------

def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.mark.parametrize("status,code", [("ok", None), ("finished-earlier", None), ("running-elsewhere", None),
                                         ("failed", 1), ("oom", 3), ("diverged", 4)])
def test_a_single_run_exits_with_its_status_code(monkeypatch, status, code):
    monkeypatch.setattr(train, "run", lambda cfg: {"run_id": "x", "status": status})
    if code is None:
        assert train.main(compose_run(BASE))["status"] == status
    else:
        with pytest.raises(SystemExit) as exited:
            train.main(compose_run(BASE))
        assert exited.value.code == code == train.EXIT_CODES[status]


def test_a_diverged_run_exits_4_from_the_command_line(tmp_path):
    proc = _cli(*[o for o in BASE if o != "rank=2"], "method=full", "method.learning_rate=1e30",
                "trainer.max_steps=30", "trainer.logging_steps=1", f"paths.results={tmp_path}")
    assert proc.returncode == 4, proc.stderr[-2000:]
    [stored] = tmp_path.glob("*/result.json")
    assert json.loads(stored.read_text())["status"] == "diverged"


# ---- config errors found before any model is built -----------------------------------------------------

@pytest.mark.parametrize("override,key", [
    ("seed=4294967296", "seed"),
    ("seed=-1", "seed"),
    ("trainer.lr_scheduler=bogus", "trainer.lr_scheduler"),
    ("trainer.logging_steps=0", "trainer.logging_steps"),
    ("trainer.eval_steps=0", "trainer.eval_steps"),
    ("trainer.warmup_ratio=-0.5", "trainer.warmup_ratio"),
    ("trainer.warmup_ratio=1", "trainer.warmup_ratio"),
    ("trainer.warmup_ratio=5", "trainer.warmup_ratio"),
    ("trainer.weight_decay=-10", "trainer.weight_decay"),
    ("dataset.length=2", "dataset.length"),
    ("dataset.num_labels=1", "dataset.num_labels"),
    ("dataset.num_labels=11", "dataset.num_labels"),
])
def test_each_bad_value_names_key_value_and_allowed(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose_run([*BASE, override]))
    assert err.value.key == key and "allowed:" in str(err.value)


def test_the_scheduler_names_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    from lab.config import LrScheduler

    assert {s.value for s in LrScheduler} == {s.value for s in SchedulerType}


@pytest.mark.parametrize("override", ["seed=4294967296", "trainer.lr_scheduler=bogus", "trainer.logging_steps=0",
                                      "trainer.warmup_ratio=-0.5", "dataset.length=2"])
def test_the_command_line_answers_in_one_line_with_exit_2_and_writes_nothing(tmp_path, override):
    proc = _cli(*BASE, override, f"paths.results={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert override.partition("=")[0] in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_warmup_ratio_is_a_share_of_the_steps(tmp_path):
    record = run(compose_run([*BASE, "trainer.warmup_ratio=0.5", "trainer.max_steps=10", "trainer.logging_steps=1",
                              "method.learning_rate=1e-3", "trainer.learning_rate=1e-3"], results=tmp_path))
    rates = [point["learning_rate"] for point in record["curve"] if "learning_rate" in point]
    # Linear warm-up over 5 of 10 steps: the rate climbs for the first half, then falls.
    assert rates.index(max(rates)) in (3, 4, 5), rates


@pytest.mark.parametrize("labels", [3, 10])
def test_tiny_bert_trains_any_number_of_synthetic_classes(tmp_path, labels):
    record = run(compose_run([*BASE, f"dataset.num_labels={labels}"], results=tmp_path))
    assert record["status"] == "ok", record.get("error")
    assert len(record["label_names"]) == labels


# ---- a CSV file's labels, encoding and cells ---------------------------------------------------------

HEADER = b"text,label\n"


def _csv(folder, name: str, body: bytes):
    path = folder / name
    path.write_bytes(HEADER + body)
    return path


def _rows(labels) -> bytes:
    return b"".join(f"sentence number {i},{label}\n".encode() for i, label in enumerate(labels))


CSV_CASES = {
    "single-class": (_rows(["pos"] * 30), "dataset.columns.label='label'", "at least 2 distinct labels"),
    "one-two-forms": (_rows(["1", "1.0", "0"] * 10), "dataset.columns.label='1, 1.0'", "one spelling per label"),
    # "café" in Latin-1 on line 12 (after the header and 10 rows): its é is the byte named.
    "latin-1": (_rows(["a", "b"] * 5) + "caf\xe9 au lait,a\n".encode("latin-1"), "dataset.path=",
                f"byte offset {len(HEADER + _rows(['a', 'b'] * 5)) + 3} (0xe9, line 12) is not UTF-8"),
    "huge-cell": (_rows(["a", "b"] * 5) + b"x" * (200 * 1024) + b",a\n", "dataset.path=", "data row 11"),
    # Issue 21: labels that differ only by case or surrounding spaces are named, never four classes or one.
    "case-labels": (_rows(["pos", "Pos", "NEG", "neg"] * 8), "dataset.columns.label='label'",
                    "'NEG' / 'neg'; 'Pos' / 'pos'"),
    "space-labels": (_rows(["pos", " pos", "neg"] * 10), "dataset.columns.label='label'", "' pos' / 'pos'"),
    "extra-cell": (_rows(["a", "b"] * 5) + b"a sentence, with a comma,b\n", "dataset.path=", "data row 11 has 3"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_a_bad_csv_exits_2_naming_what_is_wrong_and_leaves_no_folder(tmp_path, case):
    body, key, detail = CSV_CASES[case]
    path = _csv(tmp_path, f"{case}.csv", body)
    results = tmp_path / "results"
    proc = _cli("model=tiny-bert", "dataset=csv", f"dataset.path={path}", "logger=none", "trainer.max_steps=2",
                f"paths.results={results}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert key in line and detail in line and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # Found after the run's lock was taken: its folder is removed, not left for the analysis to call killed.
    assert not results.exists() or not list(results.iterdir())


# ---- a token on the command line ----------------------------------------------------------------------

TOKEN = "hf_labTestToken0123456789abcdefABCDEF"


def _assert_nowhere(folder, secret: str) -> int:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    return len(files)


@pytest.mark.parametrize("sweep", [False, True], ids=["single", "sweep"])
def test_a_token_given_as_an_override_is_in_no_written_file(tmp_path, sweep):
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    args = [*BASE, "logger=wandb", "logger.mode=offline", f"+dataset.hub.token={TOKEN}",
            f"paths.results={tmp_path / 'results'}"]
    if sweep:
        args = ["-m", *args, "hydra/sweeper=grouped", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hydra_files = list(tmp_path.rglob(".hydra/overrides.yaml"))
    assert len(hydra_files) == (2 if sweep else 1)
    assert "+dataset.hub.token=<redacted>" in hydra_files[0].read_text()
    # The offline W&B run keeps the command line (its `args`, uploaded on sync) in its .wandb file.
    runs = list(tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == (2 if sweep else 1) and b"+dataset.hub.token=<redacted>" in runs[0].read_bytes()
    assert _assert_nowhere(tmp_path, TOKEN) > 10


# ---- a full disk, a partial checkpoint, an unwritable results folder -----------------------------------

@pytest.mark.parametrize("results,reason", [
    ("/proc/lab", "a directory this user can write to"),  # root passes os.access here; a real write fails
    ("/tmp/" + "r" * 300 + "/results", "File name too long"),
])
def test_an_unwritable_results_folder_exits_2_in_one_line(results, reason):
    proc = _cli(*BASE, f"paths.results={results}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "paths.results" in proc.stderr and reason in proc.stderr


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs: a disk too full for a run (needs root; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_nearly_full_disk_is_refused_before_training(tiny_disk):
    proc = _cli(*BASE, f"paths.results={tiny_disk / 'results'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "at least 16 MiB free" in proc.stderr and "Traceback" not in proc.stderr


def _no_space_for(monkeypatch, too_big):
    """Writes of the records `too_big` picks fail as on a full disk."""
    original = rec.write_json_atomic

    def write(path, payload):
        if too_big(payload):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(path, payload)

    monkeypatch.setattr(rec, "write_json_atomic", write)


def test_on_a_full_disk_the_record_keeps_its_essentials(tmp_path, monkeypatch):
    _no_space_for(monkeypatch, lambda record: "config" in record)  # room for a few KB, not the full record
    record = run(compose_run(BASE, results=tmp_path))
    stored = json.loads((tmp_path / record["run_id"] / "result.json").read_text())
    assert stored["status"] == "ok" and stored["metrics"]["test_accuracy"] >= 0
    assert "disk full" in stored["truncated"] and "config" not in stored


def test_when_nothing_can_be_written_the_record_goes_to_the_output_and_exits_5(tmp_path, monkeypatch, capsys):
    _no_space_for(monkeypatch, lambda record: True)
    with pytest.raises(SystemExit) as exited:
        train.main(compose_run(BASE, results=tmp_path))
    assert exited.value.code == 5
    out, err = capsys.readouterr()
    [line] = [x for x in out.splitlines() if x.startswith("{")]
    assert json.loads(line)["metrics"]["test_accuracy"] >= 0
    assert "error: " in err and "standard output" in err


def test_a_partial_checkpoint_is_set_aside_and_the_rerun_starts_cleanly(tmp_path):
    cfg = compose_run([*BASE, "trainer.save_steps=5"], results=tmp_path)
    trainer_dir = tmp_path / rec.run_id(validate(cfg)) / "trainer"
    partial = trainer_dir / "checkpoint-5"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"cut short by a full disk")
    record = run(cfg)
    assert record["status"] == "ok", record.get("error")
    assert any("set aside a partial checkpoint" in note for note in record["notes"])
    assert not any("resumed from" in note for note in record["notes"])
    [aside] = trainer_dir.glob("partial-checkpoint-5-*")
    assert (aside / "model.safetensors").read_bytes() == b"cut short by a full disk"


# ---- a resumed run's throughput and train loss ---------------------------------------------------------

def test_a_resumed_run_times_only_its_own_steps_and_averages_the_loss_over_all(tmp_path, monkeypatch):
    from test_faults import fail_at_training_step

    overrides = [*BASE, "trainer.max_steps=10", "trainer.save_steps=5", "trainer.logging_steps=1"]
    fail_at_training_step(monkeypatch, 8)
    assert run(compose_run(overrides, results=tmp_path))["status"] == "failed"
    monkeypatch.undo()
    record = run(compose_run(overrides, results=tmp_path))
    timing = record["timing"]
    assert (timing["train_steps"], timing["timed_steps"], timing["resumed_at_step"]) == (10, 5, 5)
    # synthetic-cls rows are 24 words + [CLS] and [SEP]: 16 rows x 26 tokens a step
    assert (timing["train_tokens"], timing["timed_tokens"]) == (10 * 16 * 26, 5 * 16 * 26)
    # train_seconds is kept to the millisecond: on a fast machine five steps take well under a second.
    seconds = timing["train_seconds"]
    assert timing["train_tokens_per_second"] == pytest.approx(timing["timed_tokens"] / seconds,
                                                              rel=max(1e-3, 0.0006 / seconds))
    losses = [point["loss"] for point in record["curve"] if "loss" in point]
    assert len(losses) == 10
    assert record["metrics"]["train_loss"] == pytest.approx(sum(losses) / 10, abs=1e-3)


# ---- trainer.epochs: one training, one run id --------------------------------------------------------

def test_epochs_give_one_run_id_whatever_max_steps_says():
    ids = {rec.run_id(validate(compose_run([*BASE, "trainer.epochs=2", *extra])))
           for extra in ([], ["trainer.max_steps=7"], ["trainer.max_steps=500"])}
    assert len(ids) == 1
    assert validate(compose_run([*BASE, "trainer.epochs=2", "trainer.max_steps=7"])).trainer.max_steps == -1


def test_the_setup_section_says_epochs_for_epoch_runs():
    import pandas as pd

    from analysis.sections.setup import training_length

    runs = pd.DataFrame({"config.trainer.epochs": [2.0, None], "config.trainer.max_steps": [-1, 50],
                         "config.trainer.batch_size": [16, 16], "splits.train": [64, 64]})
    assert training_length(runs).startswith("2 epochs x batch 16; 50 steps x batch 16")


# ---- the pre-flight memory check -------------------------------------------------------------------------

def test_a_7b_model_that_cannot_fit_fails_in_seconds_saying_what_would(tmp_path, monkeypatch):
    import time

    from lab.memory import preflight

    monkeypatch.setattr(preflight, "available_bytes", lambda device: 16 * 2**30)
    started = time.time()
    with pytest.raises(ConfigError) as err:
        run(compose_run(["model=llama2-7b", "dataset=synthetic-lm", "logger=none", "device=cpu"], results=tmp_path))
    assert time.time() - started < 120  # no download, no 27 GB allocation
    message = str(err.value)
    assert "estimated peak" in message and "16.0 GiB free" in message and "base=4bit (a 4-bit NF4 base" in message
    assert not list(tmp_path.iterdir())  # found after the lock: its folder is gone


def test_the_batch_size_it_suggests_does_fit(tmp_path, monkeypatch):
    import re

    from lab.memory import gpus, preflight

    cfg = validate(compose_run([*BASE, "trainer.batch_size=512", "device=cpu"], results=tmp_path))
    est = preflight._estimate(cfg, "cpu", 512, preflight._longest_sequence(cfg))
    free = int((est["fixed"] + est["activations"] / 4) * (1 + gpus.ALLOCATOR_SHARE))
    monkeypatch.setattr(preflight, "available_bytes", lambda device: free)
    with pytest.raises(ConfigError) as err:
        preflight.check_fits(cfg, "cpu")
    batch = int(re.search(r"trainer.batch_size=(\d+)", str(err.value))[1])
    assert 64 <= batch <= 128
    cfg.trainer.batch_size = batch
    assert preflight.check_fits(cfg, "cpu")["peak"] <= free


def test_memory_check_false_skips_it(monkeypatch):
    from lab.memory import preflight

    monkeypatch.setattr(preflight, "available_bytes", lambda device: 1)
    assert preflight.check_fits(validate(compose_run([*BASE, "memory_check=false"])), "cpu") is None


# ---- W&B with a key and no network ------------------------------------------------------------------------

def test_wandb_without_network_gives_up_after_its_timeout_and_the_run_goes_on(tmp_path, monkeypatch):
    import time

    # A 40-character key and a W&B server that refuses every connection: "online", yet unreachable.
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    started = time.time()
    record = run(compose_run([*BASE, "logger=wandb", "logger.init_timeout=3"], results=tmp_path / "results"))
    assert time.time() - started < 60  # W&B's own default would wait 90 s
    assert record["status"] == "ok" and record["logging"]["mode"] == "online"
    # Offline mode never gets here: W&B either times out or, asking whether the run id resumes, is refused.
    assert record["logging"]["error"].startswith("wandb.init failed")


def test_a_checkpoint_without_room_stops_the_run_before_writing_half_of_it(tmp_path, monkeypatch):
    from lab.callbacks import SpaceGuard

    monkeypatch.setattr(SpaceGuard, "free_bytes", staticmethod(lambda folder: 2**20))  # 1 MiB left
    record = run(compose_run([*BASE, "trainer.save_steps=3"], results=tmp_path))
    assert record["status"] == "failed" and "no room for checkpoint-3" in record["error"]
    assert not list((tmp_path / record["run_id"]).rglob("checkpoint-*"))
    stored = json.loads((tmp_path / record["run_id"] / "result.json").read_text())
    assert stored["status"] == "failed" and "MiB free" in stored["error"]


def test_the_checkpoint_size_guess_is_the_size_of_the_checkpoint(tmp_path):
    from lab.callbacks import SpaceGuard

    record_dir = tmp_path / "r"
    full = [o for o in BASE if o != "rank=2"]
    record = run(compose_run([*full, "method=full", "trainer.save_steps=5"], results=record_dir))
    [checkpoint] = (record_dir / record["run_id"] / "trainer").glob("checkpoint-*")
    size = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
    assert SpaceGuard.checkpoint_bytes(str(checkpoint.parent), None, None) == size


# ---- round three (issue 21): ambiguous input refused, every bad value answered before training ----------

def test_a_csv_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("text,label,label\n" + "".join(f"row {i},a,{'ab'[i % 2]}\n" for i in range(30)))
    proc = _cli("model=tiny-bert", "dataset=csv", f"dataset.path={path}", "logger=none",
                f"paths.results={tmp_path / 'results'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "names each column once; 'label' appear" in proc.stderr


def test_a_jsonl_object_naming_a_field_twice_is_refused(tmp_path):
    from lab.data.sources import read_file

    path = tmp_path / "twice.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x", "label": "y"}\n')
    with pytest.raises(ConfigError, match="line 2 names 'label' twice"):
        read_file(OmegaConf.create({"path": str(path), "format": None}))


def test_fold_labels_folds_case_and_spaces_into_one_class(tmp_path):
    path = _csv(tmp_path, "folded.csv", _rows(["pos", "Pos", "NEG", " neg"] * 12))
    record = run(compose_run([*BASE[:1], "dataset=csv", f"dataset.path={path}", "dataset.fold_labels=true",
                              "trainer.max_steps=2", "logger=none", "rank=2", "dataset.sizes.validation=8",
                              "dataset.sizes.test=8"], results=tmp_path / "results"))
    assert record["status"] == "ok" and record["label_names"] == ["neg", "pos"]


@pytest.mark.parametrize("override,key", [
    ("model.max_length=129", "model.max_length"),  # tiny-bert has 128 positions
    ("method=prompt_tuning rank=100", "rank"),  # 100 virtual tokens before 64: past the 128 positions
    ("logger=wandb logger.mode=bogus", "logger.mode"),
    ("model.architecture.num_hidden_layers=1000000", "model.architecture.num_hidden_layers"),
    ("model.architecture.num_attention_heads=5", "model.architecture.num_attention_heads"),
])
def test_round_three_bad_values_answer_in_one_line_with_exit_2(tmp_path, override, key):
    proc = _cli(*BASE, *override.split(), f"paths.results={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-1500:]
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("error:") and key in line and "allowed:" in line
    assert not list(tmp_path.iterdir())


def test_max_length_above_a_checkpoints_positions_is_a_config_error(tmp_path):
    # all-MiniLM-L6-v2 has 512 positions; the schema cannot know that before its config.json is read.
    proc = _cli(*[o for o in BASE if not o.startswith("model=")], "model=minilm-l6", "model.max_length=600",
                f"paths.results={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "model.max_length=600" in proc.stderr and "512 positions" in proc.stderr


# ---- secrets redacted by value (issue 21) ----------------------------------------------------------------

API_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, as W&B's keys
SERVICE_TOKEN = "svc-Secret-Token-0987654321"
AUTH = "hub-auth-value-5555555555"


def test_secrets_pulled_in_by_interpolation_reach_no_file_and_no_line(tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "WANDB_API_KEY": API_KEY, "MY_SERVICE_TOKEN": SERVICE_TOKEN}
    (tmp_path / "wandb").mkdir()
    args = [*BASE, "logger=wandb", "logger.mode=offline", "logger.group=${oc.env:WANDB_API_KEY}",
            "logger.tags=[${oc.env:MY_SERVICE_TOKEN}]", "dataset.name=data-${oc.env:WANDB_API_KEY}",
            f"+dataset.hub.auth={AUTH}", "+sweep.note=${dataset.hub.auth}", f"paths.results={tmp_path / 'results'}",
            f"hydra.run.dir={tmp_path / 'outputs'}"]
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [stored] = (tmp_path / "results").glob("*/result.json")
    record = json.loads(stored.read_text())
    assert "_redacted_" in record["run_id"] and record["logging"]["group"] == "<redacted>"
    assert record["config"]["dataset"]["hub"]["auth"] == "<redacted>"
    assert list((tmp_path / "wandb").rglob("*.wandb"))  # W&B wrote its run: config, summary, tags, logs
    for secret in (API_KEY, SERVICE_TOKEN, AUTH):
        assert secret not in proc.stdout + proc.stderr
        assert _assert_nowhere(tmp_path, secret) > 10
    # A config error that would echo the secret names the key, not the value.
    bad = subprocess.run([sys.executable, "-m", "lab", *BASE, "trainer.lr_scheduler=${oc.env:WANDB_API_KEY}",
                          f"paths.results={tmp_path / 'bad'}", f"hydra.run.dir={tmp_path / 'bad-outputs'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 2 and "trainer.lr_scheduler='<redacted>'" in bad.stderr, bad.stderr[-2000:]
    assert API_KEY not in bad.stdout + bad.stderr and _assert_nowhere(tmp_path, API_KEY)


def test_redaction_by_value_and_by_key(monkeypatch):
    from lab import secrets

    monkeypatch.setenv("SOME_API_KEY", "value-of-the-key-123")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to search for: never cut out of other words
    assert rec.scrub_secrets({"name": "x-value-of-the-key-123-y", "hub": {"auth": "zzz"}, "n": "abc"}) == \
        {"name": "x-<redacted>-y", "hub": {"auth": "<redacted>"}, "n": "abc"}
    assert slug("data-value-of-the-key-123") == "data-_redacted_"
    secrets.remember("remembered-credential")
    assert "remembered-credential" not in str(ConfigError("k", "remembered-credential", "x"))
