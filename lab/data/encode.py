"""Text to model inputs: tokenized splits, and the collator that pads each batch.

A sweep tokenizes the same splits with the same tokenizer in every job; `tokenize(..., cache_dir=)`
keeps each tokenized split in `<cache>/tokenized/<key>/`, the key a hash of everything the tokens
depend on (the tokenizer's full definition, max_length, the task, this module's ENCODING version and
the split's rows), so a changed input is a new key, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile

import datasets
from datasets import Dataset, DatasetDict
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from lab.data.task import TaskData

log = logging.getLogger("lab")
# Bump when `_encoder` changes what it makes of a row: every cached split is then a miss.
ENCODING = 1


def tokenize(data: TaskData, tokenizer, max_length: int, cache_dir: str | None = None) -> DatasetDict:
    """Each split tokenized; with `cache_dir`, read from / written to the tokenized-split cache."""
    encode = _encoder(data.task, tokenizer, max_length)
    identity = tokenizer_identity(tokenizer) if cache_dir else None
    out = {}
    for name, split in data.splits.items():
        if identity is None:
            out[name] = _map(split, encode)
            continue
        folder = os.path.join(cache_dir, "tokenized", split_key(split, identity, max_length, data.task))
        out[name] = _cached(folder) or _store(folder, _map(split, encode))
    return DatasetDict(out)


def tokenizer_identity(tokenizer) -> str | None:
    """Everything about a fast tokenizer that decides its tokens (vocabulary, normalizer, pre- and
    post-processing, special tokens, truncation side); None for a slow one (then nothing is cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    settings = {"class": type(tokenizer).__name__, "truncation_side": tokenizer.truncation_side,
                "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
                "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    # The backend's truncation and padding are the state its last call left (tokenize passes its own).
    definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    return hashlib.sha256(json.dumps([definition, settings], sort_keys=True).encode()).hexdigest()


def split_key(split: Dataset, identity: str, max_length: int, task: str) -> str:
    digest = hashlib.sha256(f"{ENCODING}|{datasets.__version__}|{identity}|{max_length}|{task}".encode())
    rows = split[:]  # every column as a list (split[column] is a lazy Column in datasets >= 4)
    for column in sorted(rows):
        digest.update(column.encode())
        digest.update(json.dumps(rows[column], default=str).encode())
    return digest.hexdigest()[:32]


def _cached(folder: str) -> Dataset | None:
    if not os.path.isdir(folder):
        return None
    try:
        return datasets.load_from_disk(folder)
    except Exception as err:  # a damaged entry: tokenize again and replace it
        log.warning("tokenized-split cache entry %s unreadable (%s): tokenizing again", folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _store(folder: str, tokenized: Dataset) -> Dataset:
    """Save beside the entry, then rename into place: a reader never sees half an entry, and of two
    jobs that tokenized the same split at once, the first rename wins and the other's copy is dropped."""
    parent = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=parent)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the entry from another user of a shared cache
        tokenized.save_to_disk(staging)
        try:
            os.rename(staging, folder)
        except OSError:  # another job stored it first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:  # a read-only or full cache: the run goes on with its own tokens
        log.warning("tokenized split not cached in %s: %s", parent, err)
    return tokenized


def _map(split: Dataset, encode) -> Dataset:
    return split.map(encode, batched=True, remove_columns=split.column_names, desc=None)


def _encoder(task: str, tokenizer, max_length: int):
    if task == "cls":
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
    return encode


def collator(tokenizer, task: str):
    """Pads each batch to its longest row; LM labels pad with -100 so padding never enters the loss."""
    if task == "cls":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
