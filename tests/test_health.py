"""A run that trained without error but learned nothing is named `collapsed` in its record."""

import math

import numpy as np
import pytest

from conftest import compose_run
from lab import health
from lab.train import run

BALANCED = [0, 1] * 500


def test_constant_predictions_are_collapsed_on_any_balance():
    for labels in (BALANCED, [0] * 990 + [1] * 10):
        verdict = health.classification([0] * len(labels), labels, labels, final_train_loss=0.69)
        assert verdict["health"] == "collapsed"
        detail = verdict["health_detail"]
        assert detail["split"] == "validation" and detail["permutation_p"] == 1.0 and detail["binomial_p"] > 0.05


def test_a_perfect_model_on_99_to_1_labels_learned():
    # The break of issue 21: 120 validation rows, 99:1 labels, accuracy 1.0 was judged collapsed.
    labels = [0] * 119 + [1]
    verdict = health.classification(labels, labels, labels, final_train_loss=0.01)
    assert verdict["health"] == "learned"
    detail = verdict["health_detail"]
    assert detail["binomial_p"] > 0.05  # accuracy alone cannot beat the 99 % share here...
    assert detail["permutation_p"] < 0.05  # ...but the one rare row, got right, is information


def test_beating_the_majority_share_is_never_collapsed():
    # 60 % on 1,000 balanced rows with a loss stuck at the label entropy: the accuracy shows it learned.
    predictions = [1] * 600 + [0] * 400
    labels = [1] * 500 + [0] * 100 + [0] * 300 + [1] * 100
    verdict = health.classification(predictions, labels, BALANCED, final_train_loss=math.log(2))
    assert verdict["health"] == "learned" and verdict["health_detail"]["loss_at_label_entropy"]


def test_random_predictions_at_chance_are_collapsed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000).tolist()
    predictions = rng.integers(0, 2, 1000).tolist()
    verdict = health.classification(predictions, labels, labels, final_train_loss=0.69)
    assert verdict["health"] == "collapsed" and "permutation p" in verdict["health_detail"]["reasons"][0]


def test_the_loss_floor_is_the_entropy_of_the_training_labels():
    assert health.label_entropy([0, 1, 2, 3]) == pytest.approx(math.log(4))
    assert health.label_entropy([0] * 9 + [1]) < math.log(2)


def test_language_model_must_beat_its_untrained_loss():
    assert health.language_model(2.0, 4.1)["health"] == "learned"
    assert health.language_model(4.1, 4.1)["health"] == "collapsed"
    assert health.language_model(2.0, None)["health"] is None


def test_a_real_run_that_learned_nothing_is_recorded_collapsed(tmp_path):
    # Three steps cannot teach the tiny model its task: accuracy stays at the class shares.
    record = run(compose_run(["model=tiny-bert", "dataset=synthetic-cls", "trainer.max_steps=3",
                              "trainer.logging_steps=1", "logger=none"], str(tmp_path)))
    assert record["status"] == "ok" and record["health"] == "collapsed"
    assert record["health_detail"]["rule"] == "classification" and record["health_detail"]["reasons"]
    # Judged on validation: its rows and accuracy, never test's.
    assert record["health_detail"]["n"] == record["splits"]["validation"]
    assert record["health_detail"]["accuracy"] == pytest.approx(record["metrics"]["validation_accuracy"])


def test_a_real_lm_run_is_judged_against_its_untrained_loss(tmp_path):
    record = run(compose_run(["model=tiny-llama", "dataset=synthetic-lm", "trainer.max_steps=60", "logger=none"],
                             str(tmp_path)))
    detail = record["health_detail"]
    assert detail["split"] == "validation"
    assert detail["untrained_validation_loss"] > record["metrics"]["validation_loss"]
    assert record["health"] == "learned"
