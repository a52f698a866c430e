"""Text to model inputs: tokenized splits, and the collator that pads each batch."""

from __future__ import annotations

from datasets import DatasetDict
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from lab.data.task import TaskData


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
    if task == "cls":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
