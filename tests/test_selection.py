"""Choosing a learning rate per cell, bracketing the choice, and the sweeper rounds that extend a grid."""

import json

import pytest

from lab import selection
from lab.selection import Trial
from hydra_plugins.lab_sweeps.grouped_sweeper import BracketConf, bracket_jobs, confirm_jobs, trials


def runs(*scores, seeds=(0, 1, 2), learned=True):
    return [Trial(seed, score, learned) for seed, score in zip(seeds, scores)]


def test_best_mean_validation_score_is_chosen_and_its_edge_named():
    choice = selection.choose({5e-4: runs(0.70, 0.72, 0.71), 2e-3: runs(0.75, 0.74, 0.76), 8e-3: runs(0.78, 0.79, 0.77)})
    assert choice.chosen == 8e-3 and choice.edge == "high" and not choice.bracketed
    assert choice.means[2e-3] == pytest.approx(0.75) and choice.base_seeds == [0, 1, 2]


def test_a_value_with_a_collapsed_seed_is_never_chosen_but_brackets():
    trials_ = {5e-4: runs(0.70, 0.72, 0.71), 2e-3: runs(0.75, 0.74, 0.76),
               8e-3: [Trial(0, 0.90, True), Trial(1, 0.51, False), Trial(2, 0.90, True)]}
    choice = selection.choose(trials_)
    assert choice.chosen == 2e-3 and choice.bracketed
    assert 8e-3 not in choice.means


def test_nothing_eligible_chooses_nothing():
    choice = selection.choose({1e-3: runs(0.5, 0.5, 0.5, learned=False)})
    assert choice.chosen is None and choice.edge is None and not choice.bracketed


def test_confirming_seeds_do_not_change_the_choice():
    """The choice compares values on the seeds all of them ran (the base seeds)."""
    trials_ = {1e-3: runs(0.80, 0.80, 0.80), 4e-3: runs(0.81, 0.81, 0.81, 0.50, 0.50, seeds=(0, 1, 2, 3, 4))}
    assert selection.choose(trials_).chosen == 4e-3


def test_the_neighbour_is_one_grid_step_beyond_the_edge():
    assert selection.spacing([5e-4, 2e-3, 8e-3]) == pytest.approx(4)
    high = selection.Choice(8e-3, [5e-4, 2e-3, 8e-3])
    low = selection.Choice(3e-5, [3e-5, 1e-4, 3e-4])
    assert selection.neighbour(high, 4) == 0.032
    assert selection.neighbour(low, selection.spacing(low.values)) == 9.5e-06
    assert selection.neighbour(selection.Choice(2e-3, [5e-4, 2e-3, 8e-3]), 4) is None


def _outcomes(tmp_path, cells):
    """Sweep outcomes with their records on disk: {(rank, lr): [(seed, validation accuracy, health)]}."""
    out = []
    for (rank, lr), seeds in cells.items():
        for seed, score, health in seeds:
            path = tmp_path / f"r{rank}-{lr}-{seed}.json"
            path.write_text(json.dumps({"status": "ok", "health": health, "metrics": {"validation_accuracy": score}}))
            out.append({"overrides": [f"seed={seed}", "method=lora", f"rank={rank}", f"method.learning_rate={lr}"],
                        "status": "ok", "record": str(path)})
    return out


def test_sweeper_adds_the_edge_neighbour_at_the_base_seeds_and_confirms_the_choice(tmp_path):
    good, bad = "learned", "collapsed"
    outcomes = _outcomes(tmp_path, {
        (4, "5e-4"): [(0, 0.70, good), (1, 0.70, good), (2, 0.70, good)],
        (4, "2e-3"): [(0, 0.80, good), (1, 0.80, good), (2, 0.80, good)],  # interior: bracketed
        (4, "8e-3"): [(0, 0.75, good), (1, 0.75, good), (2, 0.75, good)],
        (64, "5e-4"): [(0, 0.78, good), (1, 0.78, good), (2, 0.78, good)],  # low edge
        (64, "2e-3"): [(0, 0.72, good), (1, 0.72, good), (2, 0.72, good)],
        (64, "8e-3"): [(0, 0.51, bad), (1, 0.51, bad), (2, 0.51, bad)],
    })
    bracket = BracketConf(key="method.learning_rate", confirm_seeds="3,4")
    assert set(trials(outcomes, bracket)) == {("method=lora", "rank=4"), ("method=lora", "rank=64")}
    extra = bracket_jobs(outcomes, bracket)
    assert sorted(map(tuple, extra)) == sorted(("method=lora", "rank=64", "method.learning_rate=0.00013", f"seed={s}")
                                               for s in (0, 1, 2))
    confirm = confirm_jobs(outcomes, bracket)
    assert sorted(map(tuple, confirm)) == sorted(
        [("method=lora", "rank=4", "method.learning_rate=0.002", f"seed={s}") for s in (3, 4)]
        + [("method=lora", "rank=64", "method.learning_rate=0.0005", f"seed={s}") for s in (3, 4)])
