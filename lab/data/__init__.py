"""Datasets as text, split deterministically, then tokenized for the model.

Every source yields a `TaskData` with `train`, `validation` and `test` splits: classification rows
have `text` and `label`, causal-LM rows have `prompt` and `response` (the loss is taken on response
tokens only). Splits depend on `dataset.data_seed` alone, never on the run's seed, so every run and
method is evaluated on the same examples.

    task.py       TaskData, the splits
    synthetic.py  the synthetic tasks of the tiny models
    sources.py    real data: packaged corpora, local CSV / TSV / JSONL files, the hub
    encode.py     tokenization and the collator
"""

from __future__ import annotations

from omegaconf import DictConfig

from lab.data import sources, synthetic
from lab.data.task import TaskData


def load_task_data(dcfg: DictConfig, cache_dir: str) -> TaskData:
    if dcfg.source == "synthetic":
        return synthetic.synthetic_cls(dcfg) if dcfg.task == "cls" else synthetic.synthetic_lm(dcfg)
    return sources.load(dcfg, cache_dir)
