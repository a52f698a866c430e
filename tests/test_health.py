"""A run that trained without error but learned nothing is named `collapsed` in its record."""

import math

import pytest

from conftest import compose_run
from lab import health
from lab.train import run

BALANCED = [0, 1] * 500


def test_majority_share_within_binomial_noise_is_collapsed():
    # 1,000 test rows, 51.1% of one class: the runs in the tuned report that scored 48.9 or 51.1.
    test = [1] * 511 + [0] * 489
    for accuracy in (0.489, 0.511, 0.54):
        verdict = health.classification(accuracy, test, BALANCED, final_train_loss=0.69)
        assert verdict["health"] == "collapsed", accuracy
    detail = health.classification(0.511, test, BALANCED, 0.5)["health_detail"]
    assert detail["test_n"] == 1000 and detail["majority_share"] == 0.511
    assert detail["accuracy_ceiling"] == pytest.approx(0.511 + 1.96 * math.sqrt(0.511 * 0.489 / 1000))


def test_a_run_above_the_noise_with_a_falling_loss_learned():
    verdict = health.classification(0.77, BALANCED, BALANCED, final_train_loss=0.45)
    assert verdict["health"] == "learned" and verdict["health_detail"]["reasons"] == []


def test_a_train_loss_stuck_at_the_label_entropy_is_collapsed():
    verdict = health.classification(0.60, BALANCED, BALANCED, final_train_loss=math.log(2) - 0.01)
    assert verdict["health"] == "collapsed"
    assert "label entropy 0.6931" in verdict["health_detail"]["reasons"][0]


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


def test_a_real_lm_run_is_judged_against_its_untrained_loss(tmp_path):
    record = run(compose_run(["model=tiny-llama", "dataset=synthetic-lm", "trainer.max_steps=60", "logger=none"],
                             str(tmp_path)))
    detail = record["health_detail"]
    assert detail["untrained_test_loss"] > record["metrics"]["test_loss"]
    assert record["health"] == "learned"
