"""`lab-plan`: the training memory of a configuration on a GPU, from the architecture alone.

    lab-plan model=llama2-13b method=qlora rank=64 method.targets=all-linear trainer.batch_size=4 \
             +seq_len=2048 trainer.gradient_checkpointing=true
    lab-plan -m method=full,lora,qlora trainer.batch_size=1,4      # a grid: one table, a row each
    lab-plan plan.config=path/to/config.json plan.gpu=RTX-4090      # any model; the largest batch on a card
    lab-plan --format csv ...                                       # csv | json (bytes) | md | text

It composes like lab-train (conf/plan.yaml), builds the model on the meta device with the
method applied (lab.memory.estimate), and prints bytes by category (lab.memory.budget), the peak,
the headroom rule's allowance and the smallest GPU of the one catalog (lab.memory.gpus). A user's
mistake is one line on stderr (exit status 2), never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from lab.config import ConfigError, in_multirun, validate
from lab.memory import gpus, labels  # the catalog, the rule and the rows' names: plain Python, no torch
from lab.paths import CONF_DIR

FORMATS = ("text", "csv", "json", "md")
FITS = ("batch", "seq_len")
GB, GIB = 1e9, 2**30
UNITS = "GB = 1e9 bytes, GiB = 2^30 bytes"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="plan")
def app(cfg: DictConfig) -> dict | None:
    try:
        row = plan_row(cfg)
    except (ConfigError, NotImplementedError) as err:
        print(f"error: {err}", file=sys.stderr)
        if not in_multirun():
            sys.exit(2)
        return None
    if not in_multirun():
        print(render([row], str(cfg.plan.format)))
    return row


def main() -> None:
    """The console script: `--format X` is read as plan.format=X, then Hydra takes over."""
    sys.argv = [sys.argv[0]] + format_flag(sys.argv[1:])
    app()


def format_flag(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--format" and i + 1 < len(argv):
            out.append(f"plan.format={argv[i + 1]}")
            i += 2
            continue
        out.append(f"plan.format={arg.split('=', 1)[1]}" if arg.startswith("--format=") else arg)
        i += 1
    return out


def options(cfg: DictConfig) -> tuple[DictConfig, dict]:
    """Split the planner's own keys (plan.*, +seq_len) from the run config lab-train would validate."""
    opts = OmegaConf.to_container(cfg.plan, resolve=True)
    opts["seq_len"] = cfg.get("seq_len", opts["seq_len"])
    for key, allowed in (("format", FORMATS), ("fit", FITS)):
        if opts[key] not in allowed:
            raise ConfigError(f"plan.{key}", opts[key], "one of " + ", ".join(allowed))
    if isinstance(opts["seq_len"], bool) or not isinstance(opts["seq_len"], int) or opts["seq_len"] < 1:
        raise ConfigError("seq_len", opts["seq_len"], "an integer >= 1")
    run = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("plan", "seq_len")])
    return run, opts


def run_config(cfg: DictConfig, opts: dict) -> DictConfig:
    """The validated run config: any model's node in place of model=, the task the model's."""
    with open_dict(cfg):
        if opts["config"]:
            from lab.memory.anymodel import model_node  # transformers: only when asked

            node = model_node(str(opts["config"]), str(cfg.paths.cache))
            cfg.model = OmegaConf.create(node)
        # No data is read: the dataset only has to agree with the model's task.
        cfg.dataset.task = cfg.model.task
        cfg.dataset.name = f"synthetic-{cfg.model.task}"
    run = validate(cfg)  # sizes bounded here (lab.config.architecture_sizes), before transformers loads
    if run.model.architecture is not None:
        from lab.memory.anymodel import check_supported

        check_supported(str(run.model.architecture.model_type), str(run.model.task))
    return run


def plan_row(cfg: DictConfig) -> dict:
    """One configuration's plan: its settings, then bytes by category, the peak and the GPU."""
    run, opts = options(cfg)
    card = gpus.gpu(opts["gpu"]) if opts["gpu"] else None  # before torch loads: a typo answers at once
    run = run_config(run, opts)
    from lab.memory import budget  # torch: loaded only once the config and the GPU name are checked
    from lab.memory import estimate as estimator

    plan = estimator.Plan(run, "cuda")
    batch, seq_len = int(run.trainer.batch_size), int(opts["seq_len"])
    offload = "full" if run.distributed.cpu_offload else "none"
    est = budget.peak(plan, batch, seq_len, offload)["estimate"]
    row: dict[str, Any] = settings(run, est, batch, seq_len)
    row.update(budget.budget(est))
    row["smallest GPU"] = gpus.smallest_gpu(row["peak estimate (device)"])
    if card is not None:
        limit = longest_modelled(plan.base.config) if opts["fit"] == "seq_len" else None
        row[f"largest {opts['fit']} on {card.name}"] = budget.largest(
            plan, lambda need: gpus.fits(need, card), batch, seq_len, opts["fit"], offload, limit)
    return row


def longest_modelled(config) -> int | None:
    """The longest sequence the model takes and the activation formula covers (its sliding window)."""
    limits = [getattr(config, "max_position_embeddings", None)]
    if getattr(config, "use_sliding_window", True):
        limits.append(getattr(config, "sliding_window", None))
    limits = [int(n) for n in limits if n]
    return min(limits) if limits else None


def settings(run: DictConfig, est: dict, batch: int, seq_len: int) -> dict:
    from lab import decisions  # torch: loaded only once the config is known to be valid

    # qlora names its 4-bit base already; any other method on one (base=4bit) says so in the table.
    method = run.method.name + (" on a 4-bit base" if run.method.quant is not None and run.method.name != "qlora" else "")
    adapter = "" if run.method.peft_type is None else " ".join(
        part for part in (f"{run.method.capacity}={run.rank}" if run.method.capacity else "", _targets(run)) if part)
    return {"model": run.model.name, "method": method, "adapter": adapter, "batch": batch, "seq_len": seq_len,
            "gradient checkpointing": bool(run.trainer.gradient_checkpointing),
            "precision": decisions.precision(run, "cuda"), "optimizer": est["optimizer"],
            "trainable params": est["params"]["trainable"], "total params": est["params"]["total"]}


def _targets(run: DictConfig) -> str:
    targets = run.method.targets
    if targets is None:
        return ""
    return "on " + (targets if isinstance(targets, str) else ",".join(targets))


# ---- rendering --------------------------------------------------------------------------------

SETTINGS = ("model", "method", "adapter", "batch", "seq_len", "gradient checkpointing", "precision", "optimizer",
            "trainable params", "total params")


def render(rows: list[dict], fmt: str) -> str:
    rows = [r for r in rows if r]
    if not rows:
        return "no configuration could be planned (see the errors above)"
    frame = pd.DataFrame(rows)
    byte_columns = ordered([c for c in frame if c not in SETTINGS and c != "smallest GPU"
                            and not c.startswith("largest")])
    frame[byte_columns] = frame[byte_columns].fillna(0).astype("int64")
    frame = frame[[c for c in SETTINGS if c in frame] + byte_columns
                  + [c for c in frame if c == "smallest GPU" or c.startswith("largest")]]
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps({"unit": "bytes", "headroom_rule": gpus.RULE, "catalog": gpus.CATALOG_NOTE,
                           "plans": frame.to_dict(orient="records")}, indent=1, default=int)
    table = one(frame.iloc[0], byte_columns) if len(frame) == 1 else grid(frame, byte_columns)
    text = table.to_markdown(index=False) if fmt == "md" else table.to_string(index=False)
    return "\n".join([heading(frame) if len(frame) == 1 else f"{len(frame)} configurations (GB = 1e9 bytes)",
                      "", text, ""] + notes(frame, fmt))


def ordered(byte_columns: list[str]) -> list[str]:
    """Weights first (frozen, then trainable; 4-bit before the rest), then the budget's own order."""
    weights = sorted((c for c in byte_columns if c.startswith("weights:")),
                     key=lambda c: ("trainable" in c, "4-bit" not in c, c))
    rest = [c for c in labels.ORDER if c in byte_columns]
    return weights + rest + [c for c in byte_columns if c not in weights and c not in rest]


def heading(frame: pd.DataFrame) -> str:
    row = frame.iloc[0]
    adapter = f" {row['adapter']}," if row["adapter"] else ","
    checkpointing = "on" if row["gradient checkpointing"] else "off"
    return (f"{row['model']}: {row['method']}{adapter} batch {row['batch']} x seq_len {row['seq_len']}, gradient "
            f"checkpointing {checkpointing}, {row['optimizer']}, {_precision(row['precision'])} on CUDA; "
            f"{row['trainable params']:,} of {row['total params']:,} parameters train")


def _precision(precision: str) -> str:
    return "no autocast" if precision == "fp32" else f"{precision} autocast"


def one(row: pd.Series, byte_columns: list[str]) -> pd.DataFrame:
    """One configuration: a row per category, in bytes, GB and GiB."""
    shown = [c for c in byte_columns if row[c] or not _optional(c)]
    width = max(len(c) for c in shown)  # padded: to_string right-aligns text
    return pd.DataFrame({"category": [c.ljust(width) if len(shown) else c for c in shown], "bytes": [f"{int(row[c]):,}" for c in shown],
                         "GB": [f"{row[c] / GB:,.2f}" for c in shown], "GiB": [f"{row[c] / GIB:,.2f}" for c in shown]})


def _optional(column: str) -> bool:
    """Rows shown only when not zero."""
    return column in ("host (offloaded)", "autocast cache (freed before backward)", "buffers") or column.startswith(
        "weights:")


def grid(frame: pd.DataFrame, byte_columns: list[str]) -> pd.DataFrame:
    """Several configurations: a row each, bytes as GB with two decimals, the weights as one column
    (csv and json keep every storage apart)."""
    table = frame.drop(columns=["total params"]).copy()
    weights = [c for c in byte_columns if c.startswith("weights:")]
    table.insert(table.columns.get_loc(weights[0]), "weights", frame[weights].sum(axis=1))
    dropped = weights + [labels.CONTEXT, labels.ALLOCATOR, "autocast cache (freed before backward)"]
    dropped += [c for c in ("buffers", "host (offloaded)") if not frame[c].any()]
    table = table.drop(columns=dropped)
    for column in [c for c in byte_columns if c in table] + ["weights"]:
        table[column] = (table[column] / GB).map(lambda v: f"{v:,.2f}")
    return table


def notes(frame: pd.DataFrame, fmt: str) -> list[str]:
    row = frame.iloc[0]
    lines = [f"Smallest GPU: {row['smallest GPU']}." if len(frame) == 1 else ""]
    for column in [c for c in frame if c.startswith("largest")]:
        if len(frame) == 1:
            lines.append(f"{column[0].upper()}{column[1:]} (batch {row['batch']}, seq_len {row['seq_len']} "
                         f"otherwise): {row[column]}" + (" (not even 1 fits)" if row[column] == 0 else "") + ".")
    if frame["host (offloaded)"].any():
        lines.append("host (offloaded): of the rows above, the bytes kept in host memory (distributed=fsdp_offload); "
                     "they are not in the device peak.")
    bullet = "- " if fmt == "md" else ""
    # the terminal gets a pointer; a Markdown file carries the rules themselves
    rules = labels.ACTIVATION_RULES if fmt == "md" else (
        "Activations: why QLoRA saves more than LoRA and what checkpointing removes: docs/memory.md.")
    return [line for line in lines if line] + ["", f"{bullet}Units: {UNITS}.", f"{bullet}Headroom rule: {gpus.RULE}.",
                                               f"{bullet}{gpus.CATALOG_NOTE}", f"{bullet}{rules}",
                                               f"{bullet}Estimates: the CUDA rules (bf16 autocast, 1-byte dropout "
                                               "masks, fused attention) follow the libraries' sources; the "
                                               "formula is checked to the byte on the CPU, not yet on a GPU."]


class GridTable(Callback):
    """A multirun's jobs each plan one configuration; at the end their rows print as one table."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.failed = 0
        self.format = "text"

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if in_multirun():
            self.format = str(config.plan.format)
            value = getattr(job_return, "_return_value", None)
            if isinstance(value, dict):
                self.rows.append(value)
            else:
                self.failed += 1

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(render(self.rows, self.format))
        if self.failed:
            print(f"{self.failed} of {self.failed + len(self.rows)} configurations could not be planned "
                  "(their errors are above)", file=sys.stderr)


if __name__ == "__main__":
    main()
