"""The analytic estimate beside a run's measured ledger: for one step's shape, and row by row.

A run stores the estimate for its own measured step (`estimate_summary`, called by the ledger); a
record written without one gets it recomputed from its config (`estimate_for_record`). `compare`
sets the two side by side in bytes with the estimate's relative error; the tolerances are the ones
the tests hold the estimator to.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from lab.config import validate
from lab.memory import estimate

ESTIMATE_KEYS = ("weights_total", "buffers", "gradients", "optimizer_state", "weights_gradients_optimizer",
                 "activations", "peak_estimate", "activations_error")
# weights + gradients + optimizer state are counted exactly; saved activations follow per-family formulas.
WGO_TOLERANCE, ACTIVATION_TOLERANCE = 0.01, 0.15


def estimate_at_step(cfg: DictConfig, device: str, step: dict, num_labels: int | None) -> dict:
    """The estimate for a measured step's shape; without an activation formula, the rest of it."""
    args = (cfg, "cuda" if str(device).startswith("cuda") else "cpu", step["batch"], step["seq_len"])
    try:
        return estimate.estimate(*args, padded=step["padded"], token_types=step.get("token_type_ids", False),
                                 num_labels=num_labels)
    except NotImplementedError as gap:  # no activation formula for this family: the rest still holds
        est = estimate.estimate(*args, num_labels=num_labels, activations=False)
        est["activations_error"] = str(gap)
        return est


def estimate_steps(memory: dict, cfg: DictConfig, device: str, model_config) -> dict:
    """A run's measured ledger (`memory`, from lab.memory.ledger.measured) with the analytic estimate
    for each measured step's shape set beside it, in place."""
    num_labels = getattr(model_config, "num_labels", None) if cfg.model.task == "cls" else None
    for step in memory.get("measured_steps") or []:
        step["estimate"] = estimate_summary(cfg, device, step, num_labels)
    return memory


def estimate_summary(cfg: DictConfig, device: str, step: dict, num_labels: int | None) -> dict:
    """`estimate_at_step`'s categories, or the error that stopped it (never raised into a finished run)."""
    try:
        est = estimate_at_step(cfg, device, step, num_labels)
    except Exception as err:  # an estimator gap must never fail a finished run
        return {"error": f"{type(err).__name__}: {err}"}
    return {k: est[k] for k in ESTIMATE_KEYS if k in est}


def estimate_for_record(record: dict) -> dict:
    """The analytic estimate for a run record at its measured step's shape: the one the run stored,
    else recomputed from the record's config (which must not be redacted)."""
    steps = record.get("memory", {}).get("measured_steps") or []
    if not steps:
        raise ValueError(f"record {record.get('run_id')} has no measured training step")
    step = steps[0]
    if step.get("estimate") and "error" not in step["estimate"]:
        return step["estimate"]
    if "<redacted>" in json.dumps(record["config"].get("model", {})):
        raise ValueError(f"record {record.get('run_id')}: its model config is partly redacted; cannot rebuild it")
    cfg = validate(OmegaConf.create(record["config"]))
    labels = record.get("label_names")
    est = estimate_at_step(cfg, record.get("provenance", {}).get("device") or "cpu", step,
                           len(labels) if labels else None)
    return {k: est[k] for k in ESTIMATE_KEYS if k in est}


def compare(record: dict) -> dict:
    """Ledger vs estimate of one record, in bytes, with relative errors (estimate / measured - 1)."""
    memory = record["memory"]
    est = estimate_for_record(record)
    step = (memory.get("measured_steps") or [{}])[0]
    measured_weights = sum(memory["weights"].values())
    optimizer = sum(memory["optimizer_state"].values())
    config = record.get("config", {})
    row = {
        "run": record["run_id"], "model": record["model"], "method": record["method"], "rank": record["rank"],
        "checkpointing": bool(config.get("trainer", {}).get("gradient_checkpointing")),
        "precision": record.get("precision", "fp32"),  # what the run computed in (bf16: autocast)
        "batch": step.get("batch"), "seq_len": step.get("seq_len"), "padded": step.get("padded"),
        "weights": (measured_weights, est["weights_total"]),
        "gradients": (memory["gradients"], est["gradients"]),
        "optimizer": (optimizer, est["optimizer_state"]),
        "weights+gradients+optimizer": (measured_weights + memory["gradients"] + optimizer,
                                        est["weights_gradients_optimizer"]),
        "activations": (memory["activations"], est.get("activations")),
        "estimate_error": est.get("error") or est.get("activations_error"),
        "peak_measured": memory.get("peak", {}),
    }
    for key in ("weights", "gradients", "optimizer", "weights+gradients+optimizer", "activations"):
        measured, estimated = row[key]
        row[f"{key} error"] = (estimated / measured - 1) if measured and estimated is not None else None
    return row


def within_tolerance(row: dict) -> bool:
    wgo, act = row["weights+gradients+optimizer error"], row["activations error"]
    return wgo is not None and act is not None and abs(wgo) <= WGO_TOLERANCE and abs(act) <= ACTIVATION_TOLERANCE
