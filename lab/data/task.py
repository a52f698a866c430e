"""A task's data as text: train / validation / test splits and, for classification, the label names."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import DatasetDict

SPLITS = ("train", "validation", "test")


@dataclass
class TaskData:
    """Classification rows have `text` and `label`; causal-LM rows `prompt` and `response`."""

    splits: DatasetDict
    task: str
    label_names: list[str] | None = None
