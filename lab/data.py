"""Datasets as text, split deterministically, then tokenized for the model.

Every source yields a `datasets.DatasetDict` with `train`, `validation` and `test` splits:
classification rows have `text` and `label`, causal-LM rows have `prompt` and `response` (the loss
is taken on response tokens only). Splits depend on `dataset.data_seed` alone, never on the run's
seed, so every run and method is evaluated on the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig

from lab.config import ConfigError

SPLITS = ("train", "validation", "test")


@dataclass
class TaskData:
    splits: DatasetDict
    task: str
    label_names: list[str] | None = None


def load_task_data(dcfg: DictConfig, cache_dir: str) -> TaskData:
    if dcfg.source == "synthetic":
        return synthetic_cls(dcfg) if dcfg.task == "cls" else synthetic_lm(dcfg)
    from lab import sources  # real data: packaged corpora, local files, the hub

    return sources.load(dcfg, cache_dir)


# ---- synthetic tasks: small, learnable, deterministic ----------------------------------------

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


# ---- tokenization -----------------------------------------------------------------------------

def tokenize(data: TaskData, tokenizer, max_length: int) -> DatasetDict:
    if data.task == "cls":
        def encode(batch):
            # Sentence-pair tasks (e.g. MNLI premise/hypothesis) keep the pair apart with the model's separator.
            pair = batch["text_pair"] if "text_pair" in batch else None
            out = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
            out["labels"] = batch["label"]
            return out
    else:
        def encode(batch):
            input_ids, labels = [], []
            for prompt, response in zip(batch["prompt"], batch["response"]):
                prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else (
                    [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [])
                response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                ids = (prompt_ids + response_ids)[:max_length]
                input_ids.append(ids)
                # Loss on response tokens only: prompt positions get the ignore index.
                labels.append(([-100] * len(prompt_ids) + response_ids)[:max_length])
            return {"input_ids": input_ids, "attention_mask": [[1] * len(i) for i in input_ids], "labels": labels}
    columns = data.splits["train"].column_names
    return data.splits.map(encode, batched=True, remove_columns=columns, desc=None)


def collator(tokenizer, task: str):
    """Pads each batch to its longest row; LM labels pad with -100 so padding never enters the loss."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task == "cls":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
