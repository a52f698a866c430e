"""Short real runs of each method on the tiny models: training, counts, 4-bit layers, merge, record."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, TINY_TRAINER, compose_run
from lab import methods, models, rows
from lab.config import validate
from lab.train import run

CASES = {
    "full-cls": ["method=full", "model=tiny-bert", "dataset=synthetic-cls", "method.learning_rate=2e-3"],
    "lora-cls": ["method=lora", "rank=4", "model=tiny-bert", "dataset=synthetic-cls", "method.learning_rate=5e-3"],
    "qlora-cls": ["method=qlora", "rank=4", "model=tiny-bert", "dataset=synthetic-cls",
                  "method.learning_rate=5e-3"],
    "full-lm": ["method=full", "model=tiny-llama", "dataset=synthetic-lm", "method.learning_rate=5e-3"],
    "lora-lm": ["method=lora", "rank=8", "model=tiny-llama", "dataset=synthetic-lm", "method.targets=all-linear",
                "method.learning_rate=1e-2"],
    "qlora-lm": ["method=qlora", "rank=8", "model=tiny-llama", "dataset=synthetic-lm", "method.targets=all-linear",
                 "method.learning_rate=1e-2"],
}
RECORD_FIELDS = {"schema", "run_id", "status", "health", "health_detail", "method", "rank", "model", "dataset",
                 "seed", "params", "metrics", "memory", "timing", "provenance", "config"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return {name: run(compose_run([*overrides, *TINY_TRAINER], results=results))
            for name, overrides in CASES.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_run_is_ok_and_loss_falls(records, case):
    record = records[case]
    assert record["status"] == "ok", record.get("error")
    assert record["health"] == "learned", record["health_detail"]
    m = record["metrics"]
    assert m["last_logged_train_loss"] < 0.5 * m["first_logged_train_loss"]
    if case.endswith("cls"):
        assert m["validation_loss"] < 0.5 * math.log(2)  # well below chance for 2 balanced classes
        assert m["test_accuracy"] > 0.85
    else:
        vocab = 512
        assert m["validation_loss"] < 0.5 * math.log(vocab)


@pytest.mark.parametrize("case", list(CASES))
def test_record_has_every_field_and_is_on_disk(records, case, tmp_path):
    record = records[case]
    assert RECORD_FIELDS <= set(record)
    path = record["config"]["paths"]["results"] + f"/{record['run_id']}/result.json"
    assert json.load(open(path)) == json.loads(json.dumps(record, default=str))
    assert record["memory"]["unit"] == "bytes" and record["memory"]["peak"]["unit"] == "bytes"
    assert record["timing"]["train_tokens"] > 0 and "non-padding" in record["timing"]["tokens_counted"]
    split = record["timing"]["split_seconds"]
    assert list(split) == ["startup", "setup", "train", "evaluate", "checks", "write"]
    assert all(seconds >= 0 for seconds in split.values()) and split["train"] >= record["timing"]["train_seconds"]
    if record["timing"]["startup_from"] == "process start":
        assert sum(split.values()) >= record["timing"]["wall_seconds"]
    else:  # the parts of the wall time, each rounded to the millisecond
        assert sum(split.values()) == pytest.approx(record["timing"]["wall_seconds"], abs=0.01)
    assert record["provenance"]["versions"]["peft"] and record["provenance"]["device"] == "cpu"
    assert (record["rank"] is None) == (record["method"] == "full")


def _arch(model):
    return OmegaConf.load(CONF / "model" / f"{model}.yaml").architecture


def test_trainable_counts_match_the_lora_formula(records):
    a = _arch("tiny-bert")
    d, layers, labels = a.hidden_size, a.num_hidden_layers, 2
    heads = (d * d + d) + (d * labels + labels)  # pooler dense + classifier, trained in full
    for case, r, targets in (("lora-cls", 4, 2), ("qlora-cls", 4, 2)):
        assert records[case]["params"]["trainable"] == layers * targets * r * (d + d) + heads
        assert records[case]["params"]["adapter"] == layers * targets * r * (d + d)
    a = _arch("tiny-llama")
    d, ff, layers = a.hidden_size, a.intermediate_size, a.num_hidden_layers
    kv = d // a.num_attention_heads * a.num_key_value_heads
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]  # q k v o gate up down (in, out)
    expected = layers * sum(8 * (i + o) for i, o in shapes)
    assert records["lora-lm"]["params"]["trainable"] == expected == records["lora-lm"]["params"]["adapter"]
    assert records["qlora-lm"]["params"]["trainable"] == expected == records["qlora-lm"]["params"]["adapter"]


def test_full_trains_every_parameter(records):
    for case in ("full-cls", "full-lm"):
        p = records[case]["params"]
        assert p["trainable"] == p["total"] > 0 and p["adapter"] == 0


def test_lora_total_counts_4bit_weights_at_logical_size(records):
    assert records["qlora-cls"]["params"]["total"] == records["lora-cls"]["params"]["total"]
    assert records["qlora-lm"]["params"]["total"] == records["lora-lm"]["params"]["total"]


@pytest.mark.parametrize("case", ["lora-cls", "qlora-cls", "lora-lm", "qlora-lm"])
def test_frozen_base_untouched_and_merge_agrees(records, case):
    checks = records[case]["checks"]
    assert checks["frozen_base_unchanged"] is True
    assert checks["merge_max_abs_logit_diff"] < 1e-4


def test_qlora_targets_are_nf4_double_quantized_linear4bit():
    import bitsandbytes as bnb

    cfg = validate(compose_run(["method=qlora", "rank=4", "model=tiny-llama", "dataset=synthetic-lm",
                                "method.targets=attn"]))
    path = models.checkpoint_path(cfg.model, cfg.paths.cache)
    quant = methods.quantization_config(cfg, "cpu", [])
    model = methods.apply_method(models.load_model(path, cfg.model, torch.float32, quant, None, "cpu"), cfg, "cpu")
    targeted = [m for n, m in model.named_modules() if n.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))]
    assert len(targeted) == 4 * 2
    for lora_layer in targeted:
        base = lora_layer.base_layer
        assert isinstance(base, bnb.nn.Linear4bit)
        assert base.weight.quant_state.quant_type == "nf4" and base.weight.quant_state.nested
        assert lora_layer.lora_A["default"].weight.dtype == torch.float32
    assert not isinstance(model.base_model.model.lm_head, bnb.nn.Linear4bit)


def test_qlora_heads_stay_unquantized_and_train(records):
    weights = records["qlora-cls"]["memory"]["weights"]
    assert weights["frozen_4bit_packed"] > 0 and weights["frozen_4bit_constants"] > 0
    assert "trainable_4bit_packed" not in weights


def test_optimizer_that_ran_is_recorded(records):
    opt = records["qlora-cls"]["optimizer"]
    assert opt["requested"] == "paged_adamw_32bit"
    assert opt["ran"] == "torch.optim.adamw.AdamW"
    assert any("paged_adamw_32bit" in n for n in records["qlora-cls"]["notes"])


def test_rerun_of_finished_config_is_skipped(records):
    record = records["lora-cls"]
    again = run(compose_run([*CASES["lora-cls"], *TINY_TRAINER], results=record["config"]["paths"]["results"]))
    assert again["run_id"] == record["run_id"]
    assert again["timing"]["wall_seconds"] == record["timing"]["wall_seconds"]  # the stored record, not a rerun


def test_run_id_ignores_logging_and_paths():
    from lab.record import run_id

    base = validate(compose_run(["logger=none"]))
    other = validate(compose_run(["logger=wandb", "trainer.logging_steps=3", "paths.results=/tmp/elsewhere"]))
    assert run_id(base) == run_id(other)
    assert run_id(base) != run_id(validate(compose_run(["seed=1"])))


def test_bf16_compute_on_cpu_warns(tmp_path):
    record = run(compose_run(["method=qlora", "rank=2", "model=tiny-bert", "dataset=synthetic-cls",
                              "method.quant.compute_dtype=bfloat16", "trainer.max_steps=5", "logger=none"],
                             results=tmp_path))
    assert record["status"] == "ok"
    assert any("bfloat16 on the CPU" in n for n in record["notes"])


# ---- per-row outputs and the deterministic ledger -----------------------------------------------

def _rows(record):
    return rows.read_rows(f"{record['config']['paths']['results']}/{record['run_id']}")


@pytest.mark.parametrize("case", list(CASES))
def test_rows_beside_the_record_count_the_splits_and_carry_its_hash(records, case):
    record = records[case]
    kept = record["rows"]
    folder = f"{record['config']['paths']['results']}/{record['run_id']}"
    assert kept["sha256"] == rows.file_sha256(f"{folder}/{rows.ROWS_FILE}")
    assert kept["rows"] == {split: record["splits"][split] for split in rows.SPLITS}
    frame = _rows(record)
    for split in rows.SPLITS:
        assert frame[frame["split"] == split].index.is_unique
    if case.endswith("cls"):
        for split in rows.SPLITS:  # the record's metric, recomputed from its rows
            part = frame[frame["split"] == split]
            assert part["correct"].mean() == pytest.approx(record["metrics"][f"{split}_accuracy"], abs=1e-12)
            assert ((part["p_gold"] > 0.5) <= part["correct"]).all()  # 2 classes: p_gold > 0.5 means it was picked
    else:
        test = frame[frame["split"] == "test"]
        assert (test["tokens"] > 0).all() and test["loss"].gt(0).all()
        # synthetic rows have one length: the batch-mean loss is the token-weighted mean of the rows
        weighted = (test["loss"] * test["tokens"]).sum() / test["tokens"].sum()
        assert weighted == pytest.approx(record["metrics"]["test_loss"], rel=1e-4)


def test_two_runs_on_one_split_align_row_by_row(records):
    full, lora = _rows(records["full-cls"]), _rows(records["lora-cls"])
    for split in rows.SPLITS:
        a, b = full[full["split"] == split], lora[lora["split"] == split]
        assert list(a.index) == list(b.index)
        assert (a["gold"] == b["gold"]).all()


@pytest.mark.cache
def test_ledger_is_identical_across_seeds_of_one_cell(tmp_path, vader_cache):
    """The ledger is measured on the run's longest batch, not the first shuffled one (whose padded
    length follows the seed): two seeds of one cell hold the same bytes in every category."""
    ledgers = []
    for seed in (0, 1):
        # Real sentences: lengths differ, so each seed's first batch pads to its own length.
        record = run(compose_run(["method=lora", "rank=4", "model=tiny-bert", "dataset=movie-sentences",
                                  "dataset.sizes={train: 64, validation: 16, test: 16}", "trainer.max_steps=2",
                                  "trainer.batch_size=8", "logger=none", f"seed={seed}"], results=tmp_path))
        assert record["status"] == "ok", record.get("error")
        memory = record["memory"]
        step = memory["measured_steps"][0]
        ledgers.append({key: memory[key] for key in ("weights", "buffers", "gradients", "optimizer_state",
                                                      "activations", "ledger_total")}
                       | {key: step[key] for key in ("batch", "seq_len", "padded", "storages", "by_dtype")})
    assert ledgers[0] == ledgers[1]
    assert ledgers[0]["batch"] == 8 and ledgers[0]["activations"] > 0
