"""The config schema, and the checks every run passes before a model is built.

Hydra composes the YAML in `conf/`; `validate` merges it onto the structured schema below (so a
typo'd key or a wrong type fails at once) and then checks values that a type cannot express. Every
failure is a `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

METHODS = ("full", "lora", "qlora", "dora")
# How the adapter update B·A is scaled across ranks: alpha_2r (alpha = 2r, so alpha/r = 2), fixed
# (alpha held, alpha/r) and rslora (alpha held, alpha/sqrt(r)).
SCALINGS = ("alpha_2r", "fixed", "rslora")
# The alpha that `fixed` and `rslora` hold across ranks unless method.alpha is set.
HELD_ALPHA = 16
TASKS = ("cls", "lm")
MODEL_SOURCES = ("tiny", "local", "package", "hub", "gguf")
DATASET_SOURCES = ("synthetic", "packaged", "file", "hub")
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
LORA_BIAS = ("none", "all", "lora_only")
LOGGERS = ("wandb", "none")
SPLITS = ("train", "validation", "test")
# Trainer `optim` names; auto: paged_adamw_32bit for QLoRA (as the QLoRA paper), adamw_torch otherwise.
OPTIMIZERS = ("auto", "adamw_torch", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit")
BNB_OPTIMIZERS = ("paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit")
DISTRIBUTED_MODES = ("none", "ddp", "fsdp")
DDP_BACKENDS = ("nccl", "gloo")


class ConfigError(ValueError):
    """An invalid config value: says which key, what it was, and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")


def default_cache_dir() -> str:
    """Where converted models and downloads live: $LAB_CACHE, else ~/.cache/lab."""
    return os.path.expanduser(os.environ.get("LAB_CACHE") or "~/.cache/lab")


# Resolvers used by the YAML (`alpha: ${lora_alpha:${method.scaling},${rank}}`; `mul` by configs saved
# before method.scaling existed); registered once per process.
if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: None if a is None or b is None else a * b)
if not OmegaConf.has_resolver("lora_alpha"):
    # An unknown scaling gives None here, so that validate reports method.scaling rather than alpha.
    OmegaConf.register_new_resolver(
        "lora_alpha", lambda scaling, rank: (2 * rank if rank is not None else None) if scaling == "alpha_2r"
        else HELD_ALPHA if scaling in SCALINGS else None)
if not OmegaConf.has_resolver("lab_cache"):
    OmegaConf.register_new_resolver("lab_cache", default_cache_dir)


@dataclass
class QuantSchema:
    type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"


@dataclass
class MethodSchema:
    name: str = "lora"
    learning_rate: float = 2e-3
    scaling: Optional[str] = None
    alpha: Optional[float] = None
    use_dora: bool = False
    dropout: float = 0.0
    targets: Any = "qv"
    bias: str = "none"
    quant: Optional[QuantSchema] = None
    optimizer: str = "auto"


@dataclass
class ModelSchema:
    name: str = "???"
    task: str = "cls"
    source: str = "tiny"
    path: Optional[str] = None
    # An installed pip package that ships the checkpoint; `path` is then a folder inside it.
    package: Optional[str] = None
    gguf_file: Optional[str] = None
    architecture: Optional[dict] = None
    config_source: Optional[str] = None
    max_length: int = 128
    head_modules: list = field(default_factory=list)
    target_sets: dict = field(default_factory=dict)
    trust_remote_code: bool = False


@dataclass
class DatasetSchema:
    name: str = "???"
    task: str = "cls"
    source: str = "synthetic"
    num_labels: Optional[int] = None
    labels: Optional[list] = None
    length: int = 32
    sizes: dict = field(default_factory=dict)
    data_seed: int = 1234
    path: Optional[str] = None
    format: Optional[str] = None
    columns: Optional[dict] = None
    hub: Optional[dict] = None
    # A packaged corpus (source: packaged): movie-sentences, bbc-news, chatterbot-qa.
    corpus: Optional[str] = None
    # Causal LM rows: format strings {prompt: ..., response: ...} over the row's fields.
    template: Optional[dict] = None
    generation_samples: int = 0


@dataclass
class TrainerSchema:
    max_steps: int = 300
    epochs: Optional[float] = None
    batch_size: int = 32
    eval_batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    lr_scheduler: str = "linear"
    eval_steps: Optional[int] = None
    logging_steps: int = 10
    gradient_checkpointing: bool = False
    precision: str = "auto"
    save_steps: Optional[int] = None
    threads: Optional[int] = None


@dataclass
class LoggerSchema:
    name: str = "none"
    project: str = "lab"
    entity: Optional[str] = None
    mode: str = "auto"
    group: Optional[str] = None
    tags: list = field(default_factory=list)


@dataclass
class PathsSchema:
    results: str = "results"
    cache: str = "${lab_cache:}"


@dataclass
class DistributedSchema:
    mode: str = "none"
    # FSDP only: parameters, gradients and optimizer state live on the host between uses.
    cpu_offload: bool = False
    reshard_after_forward: bool = True
    find_unused_parameters: Optional[bool] = None
    backend: Optional[str] = None


@dataclass
class RunSchema:
    method: MethodSchema = field(default_factory=MethodSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    distributed: DistributedSchema = field(default_factory=DistributedSchema)
    rank: Optional[Any] = None
    seed: Any = 0
    device: str = "auto"
    skip_finished: bool = True
    sweep: Optional[dict] = None


def _allowed(key: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ConfigError(key, value, "one of " + ", ".join(options))


def _positive_int(key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


def validate(cfg: DictConfig) -> DictConfig:
    """Return the run config merged onto the schema, or raise ConfigError."""
    # Rank first: other keys interpolate it (alpha = 2r), and a bad rank must be reported as itself.
    method_name = OmegaConf.select(cfg, "method.name")
    if method_name != "full" and "rank" in cfg:
        _positive_int("rank", cfg.rank)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunSchema), cfg)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        value = getattr(err, "value", None)
        reason = str(err).splitlines()[0]
        raise ConfigError(key, value, reason) from None

    method = merged.method
    _allowed("method", method.name, METHODS)
    rank = merged.rank
    if method.name == "full":
        if rank is not None:
            raise ConfigError("rank", rank, "no rank with method=full (full fine-tuning trains every weight)")
        if method.scaling is not None or method.use_dora:
            key, value = ("method.scaling", method.scaling) if method.scaling is not None else ("method.use_dora", True)
            raise ConfigError(key, value, "nothing with method=full: it has no adapter to scale or decompose")
    else:
        _positive_int("rank", rank)
        # None: a record's config from before method.scaling existed (alpha as given, scale alpha/r).
        if method.scaling is not None:
            _allowed("method.scaling", method.scaling, SCALINGS)
        if method.alpha is None or not isinstance(method.alpha, (int, float)) or method.alpha <= 0:
            raise ConfigError("method.alpha", method.alpha, "a number > 0")
        if method.scaling == "alpha_2r" and method.alpha != 2 * rank:
            raise ConfigError("method.alpha", method.alpha,
                              f"2 * rank = {2 * rank} with method.scaling=alpha_2r; to hold alpha at "
                              f"{method.alpha} across ranks set method.scaling=fixed (or rslora)")
        if method.name == "dora" and not method.use_dora:
            raise ConfigError("method.use_dora", False, "true with method=dora (use method=lora for plain LoRA)")
        if method.name == "lora" and method.use_dora:
            raise ConfigError("method.use_dora", True, "false with method=lora (use method=dora for DoRA)")
        if not 0 <= method.dropout < 1:
            raise ConfigError("method.dropout", method.dropout, "a number in [0, 1)")
        _allowed("method.bias", method.bias, LORA_BIAS)
        targets = method.targets
        if isinstance(targets, str):
            if targets not in merged.model.target_sets:
                sets = ", ".join(merged.model.target_sets) or "(none defined)"
                raise ConfigError("method.targets", targets,
                                  f"a target set of model {merged.model.name} ({sets}) or a list of module names")
        elif not OmegaConf.is_list(targets) or not targets or not all(isinstance(t, str) for t in targets):
            raise ConfigError("method.targets", targets, "a target set name or a non-empty list of module names")
    if method.name == "qlora":
        if method.quant is None:
            raise ConfigError("method.quant", None, "a quant section (type, double_quant, compute_dtype)")
        _allowed("method.quant.type", method.quant.type, QUANT_TYPES)
        _allowed("method.quant.compute_dtype", method.quant.compute_dtype, COMPUTE_DTYPES)
    _allowed("method.optimizer", method.optimizer, OPTIMIZERS)
    if not (method.learning_rate > 0 and math.isfinite(method.learning_rate)):
        raise ConfigError("method.learning_rate", method.learning_rate, "a finite number > 0")

    model, data, trainer = merged.model, merged.dataset, merged.trainer
    _allowed("model.task", model.task, TASKS)
    _allowed("model.source", model.source, MODEL_SOURCES)
    _positive_int("model.max_length", model.max_length)
    _allowed("dataset.task", data.task, TASKS)
    _allowed("dataset.source", data.source, DATASET_SOURCES)
    if data.task != model.task:
        raise ConfigError("dataset", data.name,
                          f"a dataset for task '{model.task}' (model {model.name} is a '{model.task}' model; "
                          f"{data.name} is '{data.task}')")
    for split in data.sizes:
        _allowed("dataset.sizes", split, SPLITS)
    for split in SPLITS:
        size = data.sizes.get(split)
        # Real data may give the training split whatever validation and test leave over.
        if split == "train" and data.source != "synthetic" and size in (None, "rest"):
            continue
        _positive_int(f"dataset.sizes.{split}", size)

    _positive_int("trainer.batch_size", trainer.batch_size)
    _positive_int("trainer.eval_batch_size", trainer.eval_batch_size)
    if trainer.epochs is None:
        _positive_int("trainer.max_steps", trainer.max_steps)
    elif trainer.epochs <= 0:
        raise ConfigError("trainer.epochs", trainer.epochs, "a number > 0, or null to train by max_steps")
    if not (trainer.learning_rate > 0 and math.isfinite(trainer.learning_rate)):
        raise ConfigError("trainer.learning_rate", trainer.learning_rate, "a finite number > 0")
    _allowed("trainer.precision", trainer.precision, PRECISIONS)
    if trainer.max_grad_norm is not None and not (trainer.max_grad_norm > 0 and math.isfinite(trainer.max_grad_norm)):
        raise ConfigError("trainer.max_grad_norm", trainer.max_grad_norm, "a finite number > 0, or null for no clipping")
    for key in ("eval_steps", "save_steps", "threads"):
        if trainer[key] is not None:
            _positive_int(f"trainer.{key}", trainer[key])

    _positive_int("seed", merged.seed, minimum=0)
    _allowed("device", merged.device, DEVICES)
    _allowed("logger.name", merged.logger.name, LOGGERS)
    _check_distributed(merged)
    return merged


def _check_distributed(merged: DictConfig) -> None:
    dist = merged.distributed
    _allowed("distributed.mode", dist.mode, DISTRIBUTED_MODES)
    if dist.backend is not None:
        _allowed("distributed.backend", dist.backend, DDP_BACKENDS)
    if dist.cpu_offload and dist.mode != "fsdp":
        raise ConfigError("distributed.cpu_offload", True, "false unless distributed.mode=fsdp "
                          "(distributed=fsdp_offload sets both)")
    if dist.mode == "fsdp" and merged.method.optimizer in BNB_OPTIMIZERS:
        # bitsandbytes' optimizers allocate and update their state with plain tensors, not with the
        # DTensor shards FSDP2 hands them (bitsandbytes issues #89, #1633).
        raise ConfigError("method.optimizer", merged.method.optimizer,
                          "adamw_torch or auto with distributed.mode=fsdp (bitsandbytes optimizers do not "
                          "take FSDP's sharded parameters)")


def check_results_writable(path: str) -> None:
    target = os.path.abspath(path)
    probe = target
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise ConfigError("paths.results", path, "a directory this user can write to")
