"""A sweep's report in W&B, beside its runs: one run of job type `report` in the sweep's group.

    python -m analysis report --results results --sweep multirun/quick --wandb yes

The run logs the report's tables as `wandb.Table`s (`tables/main`, `tables/memory_ledger`,
`tables/claims`, `tables/runs`: the comparison, sortable in the dashboard) and the report folder
(report.md, report.html, the PNGs and CSVs) as an artifact `report-<group>` of type `report`. Its id
comes from the group (resume="allow"), so a report written again updates the same run and adds a
new version of the artifact.
"""

from __future__ import annotations

import pandas as pd
import wandb

from lab.tracking import wandb_id, wandb_mode

# The per-run columns worth sorting by in the dashboard (those a frame has).
RUN_COLUMNS = ["run_id", "status", "health", "method", "rank", "seed", "lr", "metrics.test_accuracy",
               "metrics.test_macro_f1", "metrics.test_loss", "metrics.validation_accuracy", "params.trainable",
               "params.adapter", "peak_memory_bytes", "timing.train_seconds", "timing.train_tokens_per_second"]


def logged_to_wandb(frame: pd.DataFrame) -> bool:
    """Whether the runs logged to W&B: a report then goes there too (`--wandb auto`)."""
    return "logging.logger" in frame and frame["logging.logger"].eq("wandb").any()


def sweep_group(frame: pd.DataFrame, fallback: str) -> str:
    """The W&B group the sweep's runs logged to (the most common), else the sweep's name."""
    for column in ("logging.group", "config.sweep.name"):
        if column in frame and frame[column].notna().any():
            return str(frame[column].dropna().mode().iloc[0])
    return fallback


def _setting(frame: pd.DataFrame, column: str, default):
    return frame[column].dropna().mode().iloc[0] if column in frame and frame[column].notna().any() else default


def tables(built: dict, frame: pd.DataFrame, claims: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = frame[[c for c in RUN_COLUMNS if c in frame]]
    return {"main": built["main_table"], "memory_ledger": built["ledger"], "claims": claims, "runs": runs}


def as_table(df: pd.DataFrame) -> wandb.Table:
    """A wandb.Table of `df`; missing values as None (W&B's tables take no NaN in object columns)."""
    clean = df.astype(object).where(df.notna(), None)
    return wandb.Table(columns=[str(c) for c in clean.columns], data=clean.values.tolist())


def upload(built: dict, frame: pd.DataFrame, claims: pd.DataFrame, folder: str, group: str,
           mode: str = "auto") -> dict:
    """Log the tables and the report folder; returns where they went."""
    name = f"report-{group}"
    if mode == "auto":  # as the runs logged (offline runs get an offline report), else as W&B is set up
        mode = _setting(frame, "logging.mode", "auto")
    run = wandb.init(project=_setting(frame, "config.logger.project", "lab"),
                     entity=_setting(frame, "config.logger.entity", None), mode=wandb_mode(mode),
                     group=group, job_type="report", name=name, id=wandb_id(name), resume="allow",
                     reinit="finish_previous", settings=wandb.Settings(silent=True))
    try:
        run.log({f"tables/{key}": as_table(df) for key, df in tables(built, frame, claims).items() if len(df)})
        run.summary.update({"metric": built["metric"], "runs": len(frame)})
        artifact = wandb.Artifact(wandb_id(name), type="report", metadata={"group": group, "runs": len(frame)})
        artifact.add_dir(folder)
        run.log_artifact(artifact)
        return {"group": group, "run_path": run.path, "mode": run.settings.mode, "artifact": artifact.name}
    finally:
        run.finish()
