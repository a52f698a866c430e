"""Held-out evaluation with the shipped `evaluate` metrics, and the merged-vs-on-the-fly check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from transformers.trainer_utils import PredictionOutput

from lab import metrics as shipped
from lab.methods import dequantized_merged_copy
from lab.rows import SPLITS, row_ids


def evaluate(trainer, tokenized, data, tokenizer, cfg: DictConfig, device: str) -> tuple[dict, pd.DataFrame]:
    """The held-out metrics, and the per-row outputs they were computed from (lab.rows' columns).

    One pass per split: the rows come from the same predictions as the metrics, so a metric
    recomputed from the rows is the metric.
    """
    out, rows = {}, []
    for split in SPLITS:
        # Validation scores too: choosing a setting (e.g. the learning rate) by them keeps the test split unseen.
        ids = row_ids(split_texts(data.splits[split], data.task))
        if data.task == "cls":
            scores, frame = _classification_scores(trainer, tokenized[split], split, len(data.label_names))
        else:
            scores, frame = _language_model_scores(trainer, tokenized[split], split)
        out.update(scores)
        rows.append(frame.assign(split=split, row_id=ids))
    if data.task != "cls" and cfg.dataset.generation_samples:
        out.update(generation_metrics(trainer.model, data, tokenizer, cfg, device))
    return out, pd.concat(rows, ignore_index=True)


def split_texts(split_data, task: str) -> list[str]:
    """What a row's id is made of: its input text (a sentence pair joined by a tab; prompt and response)."""
    if task == "cls":
        pairs = split_data["text_pair"] if "text_pair" in split_data.column_names else None
        texts = split_data["text"]
        return [f"{t}\t{p}" for t, p in zip(texts, pairs)] if pairs is not None else list(texts)
    return [f"{p}\n{r}" for p, r in zip(split_data["prompt"], split_data["response"])]


def _classification_scores(trainer, split_data, split: str, num_labels: int) -> tuple[dict, pd.DataFrame]:
    prediction = predict_by_length(trainer, split_data, split)
    logits = torch.as_tensor(prediction.predictions).float()
    predicted = logits.argmax(-1).tolist()
    references = prediction.label_ids.tolist()
    p_gold = torch.softmax(logits, -1).gather(1, torch.as_tensor(references).view(-1, 1)).squeeze(1)
    frame = pd.DataFrame({"gold": references, "pred": predicted, "p_gold": p_gold.numpy()})
    frame["correct"] = frame["gold"] == frame["pred"]
    return {
        f"{split}_loss": prediction.metrics[f"{split}_loss"],
        f"{split}_accuracy": shipped.load("accuracy").compute(predictions=predicted, references=references)["accuracy"],
        f"{split}_macro_f1": shipped.load("macro_f1").compute(
            predictions=predicted, references=references, labels=list(range(num_labels)))["macro_f1"],
    }, frame


def _row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row of a causal-LM batch: (summed token cross-entropy, tokens), over the positions the
    model's own loss counts (next-token targets that are not the ignore index). Prompt tuning puts its
    virtual tokens before the row, so its logits are longer than the labels: the row's are the last ones."""
    logits = logits[:, -labels.shape[1]:]
    targets = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                               ignore_index=-100, reduction="none")
    counted = (targets != -100)
    return torch.stack([losses.sum(1), counted.sum(1).float()], dim=1)


def _language_model_scores(trainer, split_data, split: str) -> tuple[dict, pd.DataFrame]:
    # predict keeps every vocabulary-wide logit of a split: each batch is reduced to its rows'
    # losses first (the Trainer's preprocess_logits_for_metrics hook), in the pass that scores the loss.
    kept = trainer.preprocess_logits_for_metrics
    trainer.preprocess_logits_for_metrics = _row_losses
    try:
        prediction = predict_by_length(trainer, split_data, split)
    finally:
        trainer.preprocess_logits_for_metrics = kept
    summed, tokens = np.asarray(prediction.predictions, dtype=np.float64).T
    frame = pd.DataFrame({"loss": summed / np.maximum(tokens, 1), "tokens": tokens.astype(int)})
    loss = prediction.metrics[f"{split}_loss"]
    return {f"{split}_loss": loss, f"{split}_perplexity": _perplexity(loss)}, frame


def predict_by_length(trainer, split_data, split: str) -> PredictionOutput:
    """`trainer.predict` over the rows in order of length, the outputs put back in the split's order.

    Each batch pads to its longest row: in the split's own order nearly every batch of 128 holds a
    row near max_length, in length order few do, so the pass computes on far fewer padding tokens
    (minilm-l6, movie-sentences' 200 + 500 rows: about 0.6 of the time). Each row's logits do not
    depend on its batch (padding is masked), and the loss is the mean over rows either way (the
    Trainer weights each batch's mean loss by its rows).
    """
    order = np.argsort([len(ids) for ids in split_data["input_ids"]], kind="stable")
    prediction = trainer.predict(split_data.select(order), metric_key_prefix=split)
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return PredictionOutput(predictions=prediction.predictions[restore], label_ids=prediction.label_ids[restore],
                            metrics=prediction.metrics)


def training_metrics(num_labels: int):
    """The Trainer's `compute_metrics` for evaluations inside training: accuracy and macro-F1 on the
    validation split, as the final evaluation scores them (logged as eval/accuracy, eval/macro_f1)."""
    accuracy, macro_f1 = shipped.load("accuracy"), shipped.load("macro_f1")

    def compute(prediction) -> dict:
        predicted = np.argmax(prediction.predictions, axis=-1).tolist()
        references = prediction.label_ids.tolist()
        return {"accuracy": accuracy.compute(predictions=predicted, references=references)["accuracy"],
                "macro_f1": macro_f1.compute(predictions=predicted, references=references,
                                             labels=list(range(num_labels)))["macro_f1"]}

    return compute


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def generation_metrics(model, data, tokenizer, cfg: DictConfig, device: str) -> dict:
    """Greedy answers to the first N test prompts, scored by exact match and ROUGE-L."""
    sample = data.splits["test"].select(range(min(cfg.dataset.generation_samples, len(data.splits["test"]))))
    predictions = []
    model.eval()
    for row in sample:
        encoded = tokenizer(row["prompt"], return_tensors="pt").to(model.device)
        with torch.no_grad():
            generated = model.generate(**encoded, max_new_tokens=48, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
        predictions.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
    references = list(sample["response"])
    return {
        "test_generation_exact_match": shipped.load("exact_match").compute(
            predictions=predictions, references=references)["exact_match"],
        "test_generation_rouge_l": shipped.load("rouge_l").compute(
            predictions=predictions, references=references)["rouge_l"],
        "generation_samples": len(references),
    }


def merge_gap(model, load_base, test_split, collate, device: str, rows: int = 16) -> float:
    """Max |logit difference| between the adapter applied on the fly and merged into the weights."""
    batch = collate([test_split[i] for i in range(min(rows, len(test_split)))])
    batch = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        on_the_fly = model(**batch).logits.float()
        merged = dequantized_merged_copy(model, load_base)
        merged.eval()
        merged_logits = merged(**batch).logits.float()
    del merged
    mask = batch["attention_mask"].bool()
    if on_the_fly.dim() == 3:  # causal LM: compare real positions only
        on_the_fly, merged_logits = on_the_fly[mask], merged_logits[mask]
    return float((on_the_fly - merged_logits).abs().max())
