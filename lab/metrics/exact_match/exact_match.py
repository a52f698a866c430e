"""Exact match: the fraction of generations equal to their reference after trimming and lower-casing."""

import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        hits = sum(int(p.strip().lower() == r.strip().lower()) for p, r in zip(predictions, references))
        return {"exact_match": hits / len(references)}
