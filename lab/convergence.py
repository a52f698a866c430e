"""Whether a run trained to its length rule's end with its loss no longer falling: the record's `convergence`.

Two signs, from the Trainer's log history:
- validation (when the run evaluated inside training): the run converged when early stopping ended
  it (the validation loss had not improved for `patience` evaluations), or when its best
  evaluation lies more than `patience` evaluations before its last one; it is "still improving"
  when the best evaluation is among the last `patience` (the last one, without a patience);
- training loss: the least-squares slope of the logged loss over the last fifth of the steps
  (`scipy.stats.linregress`), and the drop it predicts over that fifth as a share of the whole
  run's drop. A run whose loss still falls by more than `STILL_FALLING` of its total drop in its last
  fifth has not flattened.

`converged` is the validation sign where there is one, else the training-loss sign.
"""

from __future__ import annotations

from scipy import stats

# The share of a run's loss drop that its last fifth may still add for the loss to count as flat.
STILL_FALLING = 0.10
LAST_SHARE = 0.2


def evaluations(log_history: list[dict], metric: str) -> list[tuple[int, float]]:
    """(step, score) of each evaluation inside training (`eval_<metric>` entries)."""
    return [(e["step"], e[f"eval_{metric}"]) for e in log_history if f"eval_{metric}" in e]


def loss_slope(log_history: list[dict]) -> dict:
    """The logged training loss's slope over the last fifth of the steps (per 10 steps), and the drop
    it predicts over that fifth as a share of the run's whole drop (first to last logged loss)."""
    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "eval_loss" not in e]
    if len(points) < 3:
        return {"slope_per_10_steps": None, "last_fifth_share_of_drop": None}
    last_step = points[-1][0]
    tail = [(s, v) for s, v in points if s >= last_step * (1 - LAST_SHARE)]
    if len(tail) < 2:
        tail = points[-2:]
    fit = stats.linregress([s for s, _ in tail], [v for _, v in tail])
    drop = points[0][1] - points[-1][1]
    tail_drop = -fit.slope * (tail[-1][0] - tail[0][0])
    return {"slope_per_10_steps": round(float(fit.slope) * 10, 6),
            "last_fifth_share_of_drop": round(float(tail_drop / drop), 4) if drop > 0 else None}


def judge(log_history: list[dict], metric: str, higher_is_better: bool, patience: int | None,
          stopped_early: bool, steps: int) -> dict:
    """The record's `convergence` entry of a finished run."""
    evals = evaluations(log_history, metric)
    slope = loss_slope(log_history)
    out = {"rule": f"early stopping on validation {metric}, patience {patience}" if patience else "fixed length",
           "steps": steps, "stopped_early": stopped_early, "evaluations": len(evals), "best_step": None,
           "validation_still_improving": None, **slope}
    if evals:
        pick = max if higher_is_better else min
        best = evals.index(pick(evals, key=lambda e: e[1]))
        out["best_step"] = evals[best][0]
        out["validation_still_improving"] = not stopped_early and best >= len(evals) - (patience or 1)
        out["converged"] = not out["validation_still_improving"]
        out["judged_by"] = "validation"
    elif slope["last_fifth_share_of_drop"] is not None:
        out["converged"] = slope["last_fifth_share_of_drop"] <= STILL_FALLING
        out["judged_by"] = "train-loss slope over the last fifth"
    else:
        out["converged"] = None
        out["judged_by"] = "nothing to judge by (fewer than 3 logged losses, or a loss that never fell)"
    return out
