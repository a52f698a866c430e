"""The setup block every report opens with: enough to rerun what it reports."""

from __future__ import annotations

import subprocess
from datetime import datetime

import pandas as pd

from analysis.document import Section
from analysis.rules import Rules


def _text(value) -> str:
    # A column with a missing value (a failed run has no split sizes) turns pandas' ints into floats.
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _values(runs: pd.DataFrame, column: str) -> list:
    if column not in runs:
        return []
    return sorted({_text(v) for v in runs[column].dropna()})


def _joined(runs: pd.DataFrame, column: str, empty: str = "–") -> str:
    return ", ".join(_values(runs, column)) or empty


def head_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def split_sizes(runs: pd.DataFrame) -> str:
    parts = []
    for split in ("train", "validation", "test"):
        values = _values(runs, f"splits.{split}") or _values(runs, f"config.dataset.sizes.{split}")
        parts.append(f"{split} {' / '.join(values) or '?'}")
    return ", ".join(parts)


def training_length(runs: pd.DataFrame) -> str:
    lines = []
    # A run that epochs decide has no max_steps of its own (lab.config: -1).
    by_epochs = runs.get("config.trainer.epochs", pd.Series(None, index=runs.index, dtype=float)).notna()
    for (epochs, batch), group in runs[by_epochs].groupby(["config.trainer.epochs", "config.trainer.batch_size"]):
        lines.append(f"{epochs:g} epochs x batch {int(batch)}")
    for (steps, batch), group in runs[~by_epochs].groupby(["config.trainer.max_steps", "config.trainer.batch_size"]):
        train = pd.to_numeric(group.get("splits.train", pd.Series(dtype=float)), errors="coerce").dropna()
        epochs = f" = {steps * batch / train.iloc[0]:.2f} epochs of {int(train.iloc[0]):,} rows" if len(train) else ""
        lines.append(f"{int(steps)} steps x batch {int(batch)} = {int(steps * batch):,} samples{epochs}")
    return "; ".join(lines) or "–"


def adapter_settings(runs: pd.DataFrame) -> str:
    adapters = runs[runs["method"] != "full"]
    if not len(adapters):
        return "– (full fine-tuning only)"
    # LoRA's own keys describe the LoRA-family runs (records from before peft_type existed are LoRA);
    # every other adapter is described by what its method file gave peft.
    peft_type = adapters["config.method.peft_type"].fillna("LORA") if "config.method.peft_type" in adapters \
        else pd.Series("LORA", index=adapters.index)
    lora, others = adapters[peft_type == "LORA"], adapters[peft_type != "LORA"]
    parts = []
    if len(lora):
        scaling = _joined(lora, "config.method.scaling", "alpha as given")
        alpha = "alpha = 2r, scale alpha/r = 2" if scaling == "alpha_2r" else f"alpha {_joined(lora, 'config.method.alpha')}"
        parts.append(f"targets {_joined(lora, 'targets')}; scaling {scaling} ({alpha}); "
                     f"dropout {_joined(lora, 'config.method.dropout')}")
    for method, group in others.groupby("method", sort=False):
        options = [c for c in group if c.startswith("config.method.peft.") and group[c].notna().any()]
        setting = ", ".join(f"{c.removeprefix('config.method.peft.')} {_joined(group, c)}" for c in options)
        parts.append(f"{group['method_label'].iloc[0]}: peft {group['config.method.peft_type'].iloc[0]}, "
                     f"rank as {_joined(group, 'config.method.capacity', 'no knob')}, targets "
                     f"{_joined(group, 'targets', 'peft default')}" + (f", {setting}" if setting else ""))
    return "; ".join(parts)


def learning_rates(runs: pd.DataFrame) -> str:
    return "; ".join(f"{method} {', '.join(f'{lr:g}' for lr in sorted(group['lr'].dropna().unique()))}"
                     for method, group in runs.groupby("method", sort=False))


def wall_time(runs: pd.DataFrame) -> str:
    if "timing.started_at" in runs and runs["timing.started_at"].notna().any():
        start = min(datetime.fromisoformat(t) for t in runs["timing.started_at"].dropna())
        end = max(datetime.fromisoformat(t) for t in runs["timing.finished_at"].dropna())
        return f"{(end - start).total_seconds() / 3600:.2f} h from the first run's start to the last run's end"
    if "timing.wall_seconds" in runs:
        return f"{runs['timing.wall_seconds'].sum() / 3600:.2f} h summed over runs (runs may have overlapped)"
    return "–"


def commits(runs: pd.DataFrame) -> str:
    found = _values(runs, "provenance.git_commit")
    head = head_commit()
    dirty = runs.get("provenance.git_dirty", pd.Series(dtype=object)).eq(True).sum()
    text = ", ".join(c[:10] for c in found) or "–"
    if head:
        text += " (this checkout's HEAD)" if found == [head] else f"; HEAD here is {head[:10]}: the records come from another commit"
    return text + (f"; {dirty} runs from a dirty tree" if dirty else "")


def by_status(runs: pd.DataFrame) -> str:
    status = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    health = runs[runs["status"] == "ok"]["health"].value_counts()
    return f"{len(runs)} runs: {status}; of the ok runs: " + ", ".join(f"{n} {h}" for h, n in health.items())


def section(runs: pd.DataFrame, rules: Rules | None = None) -> Section:
    rows = [
        ("Model", _joined(runs, "model")), ("Dataset", _joined(runs, "dataset")),
        ("Split sizes (rows)", split_sizes(runs)), ("Training", training_length(runs)),
        ("Methods", _joined(runs, "method")), ("Adapters", adapter_settings(runs)),
        ("Learning rates tried", learning_rates(runs)), ("Optimizer that ran", _joined(runs, "optimizer.ran")),
        ("Precision / compute dtype", f"{_joined(runs, 'precision')} / {_joined(runs, 'compute_dtype')}"),
        ("Device", f"{_joined(runs, 'provenance.device')} ({_joined(runs, 'provenance.device_name')}), "
                   f"{_joined(runs, 'provenance.cpu_count')} CPUs, torch threads {_joined(runs, 'provenance.torch_threads')}"),
        ("Code", f"commit {commits(runs)}; versions: transformers {_joined(runs, 'provenance.versions.transformers')}, "
                 f"peft {_joined(runs, 'provenance.versions.peft')}, torch {_joined(runs, 'provenance.versions.torch')}"),
        ("Wall time", wall_time(runs)), ("Runs", by_status(runs)),
        ("Decision rules", (rules or Rules()).describe() + " (`--margin` sets it)"),
    ]
    return Section("Setup").table(pd.DataFrame(rows, columns=["Setting", "Value"]))
