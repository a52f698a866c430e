"""Synthetic tasks: small, learnable, deterministic, drawn from `dataset.data_seed` alone."""

from __future__ import annotations

import numpy as np
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig

from lab.data.task import SPLITS, TaskData
from lab.errors import ConfigError

def _words(ids) -> str:
    return " ".join(f"w{i}" for i in ids)


def synthetic_cls(dcfg: DictConfig) -> TaskData:
    """Each class owns 5 keyword tokens; a sequence hides 3 of its class's keywords in filler."""
    rng = np.random.default_rng(dcfg.data_seed)
    num_labels = dcfg.num_labels or 2
    keywords_per_class, hidden, filler = 5, 3, np.arange(50, 200)
    if num_labels * keywords_per_class > 50:
        raise ConfigError("dataset.num_labels", num_labels, "at most 10 for synthetic-cls")
    splits = {}
    for split in SPLITS:
        texts, labels = [], []
        for _ in range(dcfg.sizes[split]):
            label = int(rng.integers(num_labels))
            keys = rng.choice(keywords_per_class, size=hidden) + label * keywords_per_class
            ids = np.concatenate([keys, rng.choice(filler, size=dcfg.length - hidden)])
            texts.append(_words(rng.permutation(ids)))
            labels.append(label)
        splits[split] = Dataset.from_dict({"text": texts, "label": labels})
    return TaskData(DatasetDict(splits), "cls", [f"class{i}" for i in range(num_labels)])


def synthetic_lm(dcfg: DictConfig) -> TaskData:
    """A Markov chain over 64 tokens where each token has two equally likely successors."""
    rng = np.random.default_rng(dcfg.data_seed)
    vocab = 64
    successors = rng.integers(vocab, size=(vocab, 2))
    splits = {}
    for split in SPLITS:
        responses = []
        for _ in range(dcfg.sizes[split]):
            ids = [int(rng.integers(vocab))]
            for _ in range(dcfg.length - 1):
                ids.append(int(successors[ids[-1], rng.integers(2)]))
            responses.append(_words(ids))
        splits[split] = Dataset.from_dict({"prompt": [""] * len(responses), "response": responses})
    return TaskData(DatasetDict(splits), "lm")
