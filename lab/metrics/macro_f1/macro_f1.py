"""Macro-averaged F1 over the label set (scikit-learn's f1_score, average='macro')."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: int labels",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, labels=None):
        return {"macro_f1": float(f1_score(references, predictions, average="macro", labels=labels, zero_division=0))}
