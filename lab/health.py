"""Did a run learn anything? A run that trained without error can still end where it started.

The record's `health` (beside `status`) is `learned` or `collapsed` for a run that trained to the
end, and null for one that did not; `health_detail` holds the rule and the numbers it used. Health is
judged on the VALIDATION split, never on test: it decides which runs enter a learning-rate choice,
and a choice made by test scores would leak the test set into the numbers we publish.

- classification: collapsed only when the validation predictions carry no information, that is
  both (a) the accuracy is not above the majority share by a one-sided binomial test at ALPHA
  (a model that beats always answering the most frequent class learned something, on any balance of
  labels) and (b) the predictions are not associated with the labels: a permutation test of the
  balanced accuracy (predictions re-paired with the labels at random, PERMUTATIONS times) does not
  reject chance at ALPHA. Constant predictions have a balanced accuracy of exactly 1/k under every
  pairing, so they never pass (b); a model that gets a rare class right does, even where 99 % of the
  rows are one class and its accuracy cannot beat the majority share by a significant margin.
  The final training loss against the entropy of the training labels (what a model that learned only
  the class frequencies scores: ln 2 for two balanced classes) is kept as evidence, not as a verdict.
- causal language modelling: collapsed when the validation loss is not below the untrained model's
  (base and freshly initialised adapters, evaluated on validation before the first step).

A collapsed run is kept, named and shown, and never enters a mean, a claim, a Pareto front or a
learning-rate choice.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import stats

ALPHA = 0.05
PERMUTATIONS = 2000
LOSS_EPSILON = 0.02
LEARNED, COLLAPSED = "learned", "collapsed"
# Majority share above which the labels count as imbalanced: accuracy then says little (always
# answering the majority class scores it), and the report leads with balanced accuracy / macro-F1.
IMBALANCED = 0.6


def label_entropy(labels) -> float:
    """Entropy (nats) of the label frequencies: the loss of a model that predicts only them."""
    counts = Counter(labels)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def balanced_accuracy(predictions, labels) -> float:
    """The mean recall over the classes present in `labels` (1/k for any constant prediction)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def classification(predictions, labels, train_labels, final_train_loss: float | None) -> dict:
    """`health` and `health_detail` of a classification run from its validation predictions and labels."""
    predictions, labels = list(predictions), list(labels)
    n = len(labels)
    correct = sum(p == t for p, t in zip(predictions, labels))
    majority = max(Counter(labels).values()) / n
    above_majority = stats.binomtest(correct, n, majority, alternative="greater").pvalue
    observed = balanced_accuracy(predictions, labels)
    associated = _association_pvalue(predictions, labels)
    floor = label_entropy(train_labels)
    collapsed = above_majority >= ALPHA and associated >= ALPHA
    reasons = []
    if collapsed:
        reasons.append(f"validation accuracy {correct / n:.4f} not above the majority share {majority:.4f} "
                       f"(binomial p = {above_majority:.3f}, n={n}) and predictions not associated with the labels "
                       f"(balanced accuracy {observed:.4f}, permutation p = {associated:.3f})")
    return {"health": COLLAPSED if collapsed else LEARNED,
            "health_detail": {"rule": "classification", "split": "validation", "n": n, "accuracy": correct / n,
                              "majority_share": majority, "binomial_p": above_majority,
                              "balanced_accuracy": observed, "permutation_p": associated, "alpha": ALPHA,
                              "top_prediction_share": max(Counter(predictions).values()) / n,
                              "label_entropy": floor, "final_train_loss": final_train_loss,
                              "loss_at_label_entropy": final_train_loss is not None
                              and final_train_loss >= floor - LOSS_EPSILON,
                              "reasons": reasons}}


def _association_pvalue(predictions: list, labels: list) -> float:
    """One-sided p of the balanced accuracy under random re-pairing of predictions and labels
    (scipy's permutation test, seeded: a record's verdict is reproducible)."""
    if len(set(predictions)) < 2:
        return 1.0  # every pairing scores the same: no association can be shown
    truth = np.asarray(labels)
    result = stats.permutation_test((np.asarray(predictions),), lambda p: balanced_accuracy(p, truth),
                                    permutation_type="pairings", n_resamples=PERMUTATIONS,
                                    alternative="greater", random_state=0)
    return float(result.pvalue)


def language_model(validation_loss: float, untrained_validation_loss: float | None) -> dict:
    """`health` and `health_detail` of a causal-LM run."""
    detail = {"rule": "language model", "split": "validation", "validation_loss": validation_loss,
              "untrained_validation_loss": untrained_validation_loss, "reasons": []}
    if untrained_validation_loss is None:
        return {"health": None, "health_detail": {**detail, "reasons": ["no untrained validation loss measured"]}}
    if not validation_loss < untrained_validation_loss:
        detail["reasons"].append(f"validation loss {validation_loss:.4f} not below the untrained model's "
                                 f"{untrained_validation_loss:.4f}")
    return {"health": COLLAPSED if detail["reasons"] else LEARNED, "health_detail": detail}
