"""What makes a job fast without changing what it computes: the tokenized-split cache, the
length-ordered evaluation pass, and bf16 autocast on a CPU that has bf16 instructions (lab.decisions)."""

import os

import numpy as np
import pytest
import torch

from lab import decisions, models
from lab.config import compose
from lab.data import load_task_data
from lab.data.encode import tokenize


def _task(model: str, dataset: str):
    cfg = compose([f"model={model}", f"dataset={dataset}", "logger=none"])
    cache = os.path.expanduser(cfg.paths.cache)
    data = load_task_data(cfg.dataset, cache)
    tokenizer = models.load_tokenizer(models.checkpoint_path(cfg.model, cache), cfg.model)
    return cfg, data, tokenizer


@pytest.mark.parametrize("model,dataset", [("tiny-bert", "synthetic-cls"), ("tiny-llama", "synthetic-lm")])
def test_a_cached_tokenized_split_is_the_split_tokenized_again(tmp_path, model, dataset):
    cfg, data, tokenizer = _task(model, dataset)
    fresh = tokenize(data, tokenizer, cfg.model.max_length)
    stored = tokenize(data, tokenizer, cfg.model.max_length, cache_dir=str(tmp_path))
    entries = sorted(os.listdir(tmp_path / "tokenized"))
    assert len(entries) == 3 and not any(name.startswith(".staging-") for name in entries)
    read = tokenize(data, tokenizer, cfg.model.max_length, cache_dir=str(tmp_path))
    for split in fresh:
        assert read[split].to_dict() == stored[split].to_dict() == fresh[split].to_dict()
    assert sorted(os.listdir(tmp_path / "tokenized")) == entries  # read back, not stored again
    # Another max_length, or other rows in a split, is another entry: a stale hit is impossible.
    tokenize(data, tokenizer, cfg.model.max_length - 1, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path / "tokenized")) == 6
    data.splits["test"] = data.splits["test"].select(range(len(data.splits["test"]) - 1))
    tokenize(data, tokenizer, cfg.model.max_length, cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path / "tokenized")) == 7


def test_a_damaged_cache_entry_is_tokenized_again(tmp_path):
    cfg, data, tokenizer = _task("tiny-bert", "synthetic-cls")
    tokenize(data, tokenizer, cfg.model.max_length, cache_dir=str(tmp_path))
    for entry in (tmp_path / "tokenized").iterdir():
        for name in os.listdir(entry):
            (entry / name).write_bytes(b"not arrow")
    again = tokenize(data, tokenizer, cfg.model.max_length, cache_dir=str(tmp_path))
    assert again["test"].to_dict() == tokenize(data, tokenizer, cfg.model.max_length)["test"].to_dict()


def test_the_length_ordered_pass_returns_the_splits_order(tmp_path):
    from lab.evaluation import predict_by_length
    from lab.recipe import FineTune

    cfg = compose(["model=tiny-bert", "dataset=synthetic-cls", "logger=none", "method=full",
                   f"paths.results={tmp_path}", "trainer.eval_batch_size=16"])
    job = FineTune(cfg, "cpu", "order")
    job.setup_data()
    job.setup_model()
    job.setup_trainer()
    split = job.tokenized["test"]
    plain = job.trainer.predict(split, metric_key_prefix="test")
    ordered = predict_by_length(job.trainer, split, "test")
    assert np.array_equal(ordered.label_ids, np.array(split["labels"]))
    np.testing.assert_allclose(ordered.predictions, plain.predictions, atol=1e-5)
    assert ordered.metrics["test_loss"] == pytest.approx(plain.metrics["test_loss"], abs=1e-5)


def test_bf16_on_the_cpu_is_autocast_where_the_cpu_has_bf16_instructions():
    notes: list[str] = []
    cfg = compose(["trainer.precision=bf16"])
    chosen = decisions.precision(cfg, "cpu", notes)
    if decisions.cpu_bf16_supported():
        assert chosen == "bf16" and not notes and decisions.autocast_dtype(cfg, "cpu") == torch.bfloat16
    else:
        assert chosen == "fp32" and "computing in fp32" in notes[0]
    # The default stays fp32 on the CPU; fp16 has no CPU path.
    assert decisions.precision(compose([]), "cpu") == "fp32"
    fp16_notes: list[str] = []
    assert decisions.precision(compose(["trainer.precision=fp16"]), "cpu", fp16_notes) == "fp32" and fp16_notes
