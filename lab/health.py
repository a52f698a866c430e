"""Did a run learn anything? A run that trained without error can still end where it started.

The record's `health` (beside `status`) is `learned` or `collapsed` for a run that trained to the
end, and null for one that did not; `health_detail` holds the rule and the numbers it used.

- classification: collapsed when the test accuracy is no better than always answering the most
  frequent test class (at most that share plus 1.96 binomial standard errors of a test set of n
  rows), or when the final logged training loss has not left the entropy of the training labels
  (what a model that learned only the class frequencies scores: ln 2 for two balanced classes) by
  more than LOSS_EPSILON nats;
- causal language modelling: collapsed when the test loss is not below the untrained model's
  (base and freshly initialised adapters, evaluated before the first step).

A collapsed run is kept, named and shown, and never enters a mean, a claim, a Pareto front or a
learning-rate choice.
"""

from __future__ import annotations

import math
from collections import Counter

Z_95 = 1.96
LOSS_EPSILON = 0.02
LEARNED, COLLAPSED = "learned", "collapsed"


def label_entropy(labels) -> float:
    """Entropy (nats) of the label frequencies: the loss of a model that predicts only them."""
    counts = Counter(labels)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def classification(test_accuracy: float, test_labels, train_labels, final_train_loss: float | None) -> dict:
    """`health` and `health_detail` of a classification run."""
    counts = Counter(test_labels)
    n = sum(counts.values())
    majority = max(counts.values()) / n
    ceiling = majority + Z_95 * math.sqrt(majority * (1 - majority) / n)
    floor = label_entropy(train_labels)
    chance_accuracy = test_accuracy <= ceiling
    chance_loss = final_train_loss is not None and final_train_loss >= floor - LOSS_EPSILON
    reasons = []
    if chance_accuracy:
        reasons.append(f"test accuracy {test_accuracy:.4f} <= majority share {majority:.4f} + {Z_95} binomial SE "
                       f"(n={n}) = {ceiling:.4f}")
    if chance_loss:
        reasons.append(f"final train loss {final_train_loss:.4f} >= label entropy {floor:.4f} - {LOSS_EPSILON}")
    return {"health": COLLAPSED if reasons else LEARNED,
            "health_detail": {"rule": "classification", "test_n": n, "majority_share": majority,
                              "accuracy_ceiling": ceiling, "label_entropy": floor, "loss_epsilon": LOSS_EPSILON,
                              "final_train_loss": final_train_loss, "reasons": reasons}}


def language_model(test_loss: float, untrained_test_loss: float | None) -> dict:
    """`health` and `health_detail` of a causal-LM run."""
    detail = {"rule": "language model", "test_loss": test_loss, "untrained_test_loss": untrained_test_loss,
              "reasons": []}
    if untrained_test_loss is None:
        return {"health": None, "health_detail": {**detail, "reasons": ["no untrained test loss measured"]}}
    if not test_loss < untrained_test_loss:
        detail["reasons"].append(f"test loss {test_loss:.4f} not below the untrained model's {untrained_test_loss:.4f}")
    return {"health": COLLAPSED if detail["reasons"] else LEARNED, "health_detail": detail}
