"""Every run's record in one pandas DataFrame, from the results store and optionally from W&B.

    python -m analysis collect --results results              # summary of what is there
    python -m analysis collect --results results --csv runs.csv

One row per record (any status: ok, failed, oom, diverged), with the record's nested fields
flattened by `pandas.json_normalize` (`metrics.test_accuracy`, `memory.weights.frozen_float32`,
`config.trainer.max_steps`, ...) and a few derived columns (`targets`, `peak_memory_bytes`, `lr`,
`health`, and `learned`: ok and not collapsed, the only runs a mean, a claim or a choice may use).
Run folders that hold no readable record are not rows: they come back as `problems`, each with
its path and what is wrong (partial: killed or still running; corrupt; not a record).
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass, field

import pandas as pd
from omegaconf import OmegaConf

from lab import record as record_io
from lab.paths import CONF_DIR
from lab.record import METHOD_KEYS_BEFORE, STATUSES, record_from_summary

# Keys that identify a run's setting besides method, rank and seed. A table cell averages over
# seeds only, so any of these that differs inside one (model, dataset, method, rank) cell splits
# the cell (see `split_keys`). Method-specific keys do not apply to full fine-tuning.
SHARED_SETTING_KEYS = [
    "config.trainer.max_steps", "config.trainer.epochs", "config.trainer.batch_size",
    "config.trainer.weight_decay", "config.trainer.warmup_ratio", "config.trainer.lr_scheduler",
    "config.trainer.gradient_checkpointing", "config.trainer.precision", "config.trainer.early_stopping_patience",
    "config.model.max_length",
    "config.dataset.sizes.train", "config.dataset.sizes.validation", "config.dataset.sizes.test",
    "config.dataset.data_seed", "provenance.device",
]
# Method keys that describe a method (its table label, whether it takes a 4-bit base) or name it:
# every other key of a record's `method` section (its peft type, capacity, peft options, LoRA's
# scaling, the 4-bit quantization, ...) is a setting, whatever the method file holds (method_setting_keys).
DESCRIPTIVE_METHOD_COLUMNS = ("config.method.name", "config.method.label", "config.method.allows_4bit",
                              "config.method.targets")
CELL = ["model", "dataset", "method", "rank"]
QLORA_DORA = "qlora+dora"  # the `method` of a qlora record with method.use_dora
ON_4BIT = "+4bit"  # appended to the `method` of any other adapter's record on a 4-bit base (base=4bit)


@dataclass
class Collection:
    runs: pd.DataFrame
    problems: list[dict] = field(default_factory=list)
    # What the reader did that a reader of the report must know (e.g. two files of one name kept apart).
    notes: list[str] = field(default_factory=list)

    def not_ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] != "ok"] if len(self.runs) else self.runs


def read_results(results_dir: str) -> tuple[list[dict], list[dict]]:
    """(records, problems) of the run folders under `results_dir` (lab.record reads them)."""
    records, problems = record_io.read_results(results_dir)
    for record in records:
        record["source"], record["path"] = "results", record.pop("path")
    return records, problems


def read_wandb(project: str, entity: str | None = None, api=None) -> tuple[list[dict], list[dict]]:
    """(records, problems) from a W&B project: each run's config and summary (`wandb_record`)."""
    if api is None:
        import wandb  # only when W&B runs are read

        api = wandb.Api()
    records, problems = [], []
    path = f"{entity}/{project}" if entity else project
    for run in api.runs(path):
        _add(wandb_record("/".join(run.path), run.url, dict(run.config or {}), dict(run.summary or {})),
             records, problems)
    return records, problems


def read_wandb_dir(wandb_dir: str) -> tuple[list[dict], list[dict]]:
    """(records, problems) from a local `wandb/` folder: the offline runs `wandb sync` would upload,
    decoded from their `.wandb` files (analysis.wandb_files). Report runs are no records: left out."""
    from analysis.wandb_files import read_dir  # imports wandb: only when W&B runs are read

    records, problems = [], []
    for run in read_dir(wandb_dir):
        if run.job_type != "report":
            _add(wandb_record(run.path, run.folder, run.config, run.summary), records, problems)
    return records, problems


def _add(record_or_problem: dict, records: list[dict], problems: list[dict]) -> None:
    (problems if "problem" in record_or_problem else records).append(record_or_problem)


def wandb_record(path: str, url: str, config: dict, summary: dict) -> dict:
    """A row's record from a W&B run, or a problem. The summary holds the result record's fields
    (lab.record.summary_of: params, memory, timing, ... and metrics under test/, validation/,
    train/); runs logged before it did hold status and flat metrics only. The row's run id is
    `wandb:<path>`; `lab_run_id` is the run id the run recorded."""
    method, status = config.get("method") or {}, summary.get("status")
    if status not in STATUSES or not isinstance(method, dict):
        return {"path": f"wandb:{path}", "problem": f"no finished lab record (status {status!r})"}
    fields = record_from_summary(summary)
    metrics = fields.pop("metrics") or {k: v for k, v in summary.items()
                                        if k != "status" and isinstance(v, (int, float))}
    return {**fields, "run_id": f"wandb:{path}", "lab_run_id": fields.get("run_id"), "status": status,
            "method": method.get("name"), "rank": config.get("rank"), "model": (config.get("model") or {}).get("name"),
            "dataset": (config.get("dataset") or {}).get("name"), "seed": config.get("seed"), "metrics": metrics,
            "config": config, "source": "wandb", "path": url, "wandb_path": path}


def to_frame(records: list[dict]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame(columns=["run_id", "status", *CELL, "seed", "source", "path"])
    df = pd.json_normalize(records, sep=".")
    for column in ("rank", "seed"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("Int64")
    df["method_label"] = [method_label(r) for r in records]
    if "config.method.use_dora" in df:
        # DoRA on the 4-bit base is its own row in every table, as DoRA (method=dora) is.
        df.loc[(df["method"] == "qlora") & df["config.method.use_dora"].eq(True), "method"] = QLORA_DORA
    on_4bit = pd.Series([_on_4bit(r) and r.get("method") != "qlora" for r in records], index=df.index)
    # Any other method on a 4-bit base is its own row too: the same file's adapter, another base.
    df.loc[on_4bit, "method"] = df.loc[on_4bit, "method"] + ON_4BIT
    df["targets"] = [_targets(r) for r in records]
    # CUDA reports allocated bytes above the baseline, the CPU the resident set above it.
    peak = pd.Series(float("nan"), index=df.index)
    for key in ("memory.peak.peak_allocated_above_baseline", "memory.peak.peak_rss_above_baseline"):
        if key in df:
            peak = peak.fillna(df[key])
    df["peak_memory_bytes"] = peak
    if "params.trainable" in df:
        df["trainable_fraction"] = df["params.trainable"] / df["params.total"]
    df["lr"] = pd.to_numeric(df["config.method.learning_rate"], errors="coerce") if "config.method.learning_rate" in df \
        else float("nan")
    # Records written before run health existed say nothing: `unknown`, never counted as collapsed.
    df["health"] = df["health"].fillna("unknown") if "health" in df else "unknown"
    df["learned"] = (df["status"] == "ok") & (df["health"] != "collapsed")
    df["data_identity"] = [data_identity(r) for r in records]
    return df


def _method_section(record: dict) -> dict:
    return ((record.get("config") or {}).get("method") or {})


def _on_4bit(record: dict) -> bool:
    return _method_section(record).get("quant") is not None


def method_label(record: dict) -> str:
    """The method's name in tables: the label its method file gave the record (config.method.label);
    for a record written before labels existed, its shipped method file's; else its name. DoRA and a
    4-bit base under another method's name say so."""
    section, name = _method_section(record), str(record.get("method"))
    label = section.get("label") or shipped_label(name) or name
    if name == "qlora" and section.get("use_dora"):
        return f"{label}+DoRA"
    return f"{label} (4-bit base)" if _on_4bit(record) and name != "qlora" else label


@functools.cache
def shipped_label(name: str) -> str | None:
    path = os.path.join(CONF_DIR, "method", f"{name}.yaml")
    if not os.path.isfile(path):
        return None
    return OmegaConf.select(OmegaConf.load(path), "method.label", default=None)


def method_setting_keys(df: pd.DataFrame) -> list[str]:
    """The record's method keys that set what a run does: read from the records themselves (what their
    method files hold), not from a list of the methods this suite ships."""
    return ["targets"] + sorted(c for c in df.columns
                                if c.startswith("config.method.") and c not in DESCRIPTIVE_METHOD_COLUMNS)


def data_identity(record: dict) -> str | None:
    """Which bytes a run trained on: a local file's SHA-256 (the record's `data_identity`), or for a
    record from before that field its file's path as given; None for every other source, whose name
    and config say it all."""
    sha = (record.get("data_identity") or {}).get("sha256") if isinstance(record.get("data_identity"), dict) else None
    if sha:
        return f"sha256:{sha}"
    dataset = (record.get("config") or {}).get("dataset") or {}
    return f"path:{dataset.get('path')}" if dataset.get("source") == "file" and dataset.get("path") else None


def separate_data(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs that share a dataset name but not its bytes (a/data.csv and b/data.csv, or a file edited
    between runs) are different tasks: each gets its own dataset name (the name and the hash's first
    characters), so no cell, mean or claim pools them. Returns the frame and a note per name split."""
    if not len(df) or "data_identity" not in df:
        return df, []
    notes, df = [], df.copy()
    for name, group in df.groupby("dataset", dropna=True):
        identities = group["data_identity"].dropna().unique()
        if len(identities) < 2:
            continue
        renamed = {identity: f"{name} [{identity.split(':', 1)[1][:8] if identity.startswith('sha256:') else identity[5:]}]"
                   for identity in identities}
        mask = (df["dataset"] == name) & df["data_identity"].notna()
        df.loc[mask, "dataset"] = df.loc[mask, "data_identity"].map(renamed)
        notes.append(f"dataset {name!r} names {len(identities)} different data files (by content hash): kept apart as "
                     + ", ".join(sorted(renamed.values())) + "; their runs are never pooled into one cell")
    return df, notes


def _targets(record: dict) -> str | None:
    """The LoRA target set as a name (`qv`) or `+`-joined module list; None for full fine-tuning."""
    if record.get("method") == "full":
        return None
    targets = ((record.get("config") or {}).get("method") or {}).get("targets")
    if isinstance(targets, list):
        return "+".join(targets)
    return targets


def target_modules(row: pd.Series) -> list[str] | None:
    """The module names a run's targets resolve to, from its own model config."""
    targets = row.get("config.method.targets")
    if row.get("method") == "full" or targets is None or (isinstance(targets, float) and pd.isna(targets)):
        return None
    if isinstance(targets, str):
        named = row.get(f"config.model.target_sets.{targets}")
        return list(named) if isinstance(named, list) else None
    return list(targets)


def collect(results_dir: str | None = "results", wandb_project: str | None = None,
            wandb_entity: str | None = None, wandb_api=None, wandb_dir: str | None = None) -> Collection:
    records, problems = read_results(results_dir) if results_dir else ([], [])
    sources = ([read_wandb(wandb_project, wandb_entity, wandb_api)] if wandb_project else []) + \
        ([read_wandb_dir(wandb_dir)] if wandb_dir else [])
    for remote, remote_problems in sources:
        # A run logged to W&B also has its local record, which is the more complete of the two.
        local_paths = {((r.get("logging") or {}).get("run_path") or "") for r in records}
        local_paths = {"/".join(p) if isinstance(p, list) else p for p in local_paths}
        records += [r for r in remote if r["wandb_path"] not in local_paths]
        problems += remote_problems
    frame, notes = separate_data(to_frame(records))
    return Collection(frame, problems, notes)


def split_keys(df: pd.DataFrame) -> list[str]:
    """Setting keys that take more than one value inside some (model, dataset, method, rank) cell:
    they must be part of the cell, or the cell would average different settings together."""
    keys = []
    for key in SHARED_SETTING_KEYS + method_setting_keys(df):
        if key in df and len(df):
            values = df[key].map(hashable)
            before = METHOD_KEYS_BEFORE.get(key.removeprefix("config.method."))
            if key.startswith("config.method.") and before is not None:
                # A record from before the key existed ran with its earlier value: the same setting.
                values = values.replace("None", hashable(before))
            if values.groupby([df[c].astype(str) for c in CELL]).nunique(dropna=False).max() > 1:
                keys.append(key)
    return keys


def hashable(value):
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return "None" if value is None or (isinstance(value, float) and pd.isna(value)) else value


def filter_rows(df: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    """Rows whose column equals the value, for each `column=value` (compared as text)."""
    for condition in where:
        key, _, value = condition.partition("=")
        if key not in df:
            raise SystemExit(f"--where {condition}: no column {key!r}")
        df = df[df[key].astype(str) == value]
    return df


def describe(collection: Collection) -> str:
    df = collection.runs
    lines = [f"{len(df)} records" + (": " + ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
                                      if len(df) else "")]
    lines += [f"note: {note}" for note in collection.notes]
    for _, row in collection.not_ok().iterrows():
        lines.append(f"  {row['status']}: {row['run_id']}: {row.get('error')}")
    if collection.problems:
        lines.append(f"{len(collection.problems)} run folders without a usable record:")
        lines += [f"  {p['problem']}: {p['path']}" for p in collection.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the results store (paths.results)")
    parser.add_argument("--wandb-project", help="also read this W&B project (needs W&B online)")
    parser.add_argument("--wandb-entity")
    parser.add_argument("--wandb-dir", help="also read the offline runs of this local wandb/ folder")
    parser.add_argument("--csv", help="write the collected rows here")
    args = parser.parse_args(argv)
    collection = collect(args.results, args.wandb_project, args.wandb_entity, wandb_dir=args.wandb_dir)
    print(describe(collection))
    if args.csv:
        collection.runs.to_csv(args.csv, index=False)

