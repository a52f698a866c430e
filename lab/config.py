"""The config schema, the checks every run passes before a model is built, and composing a config.

Hydra composes the YAML in `conf/`; `validate` merges it onto the structured schema below (a
typo'd key, a wrong type or a value outside an `Enum` fails at once) and then runs the cross-field
checks that a type cannot express. Every failure is a `ConfigError` naming the key, the value and
what is allowed. Nothing here imports torch or transformers: a config error answers in a second.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lab.errors import ConfigError
from lab.paths import CONF_DIR, default_cache_dir, resolve_file, slug
from lab.secrets import remember_secret_keys

__all__ = ["ConfigError", "compose", "validate", "check_results_writable"]


class Choice(str, Enum):
    """A config value from a fixed set. A `str`, so code and records see the plain value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def _choices(name: str, values: str) -> type[Choice]:
    return Choice(name, {v: v for v in values.split()})


# How the adapter update B·A is scaled across ranks: alpha_2r (alpha = 2r, so alpha/r = 2), fixed
# (alpha held, alpha/r) and rslora (alpha held, alpha/sqrt(r)).
Scaling = _choices("Scaling", "alpha_2r fixed rslora")
Task = _choices("Task", "cls lm")
ModelSource = _choices("ModelSource", "tiny local package hub gguf")
DatasetSource = _choices("DatasetSource", "synthetic packaged file hub")
QuantType = _choices("QuantType", "nf4 fp4")
ComputeDtype = _choices("ComputeDtype", "auto float32 bfloat16 float16")
Precision = _choices("Precision", "auto fp32 bf16 fp16")
Device = _choices("Device", "auto cpu cuda")
LoraBias = _choices("LoraBias", "none all lora_only")
Logger = _choices("Logger", "wandb none")
# W&B's run modes; auto: online with a configured key, else offline (lab.tracking.wandb_mode).
WandbMode = _choices("WandbMode", "auto online offline disabled")
# Trainer `optim` names; auto: paged_adamw_32bit for QLoRA (as the QLoRA paper), adamw_torch otherwise.
Optimizer = _choices("Optimizer", "auto adamw_torch paged_adamw_32bit paged_adamw_8bit adamw_8bit")
# transformers' SchedulerType values (tests/test_bad_input.py holds the two lists equal): named here so
# that a typo fails before torch is imported.
LrScheduler = _choices("LrScheduler", "linear cosine cosine_with_restarts polynomial constant constant_with_warmup "
                       "inverse_sqrt reduce_lr_on_plateau cosine_with_min_lr cosine_warmup_with_min_lr "
                       "warmup_stable_decay greedy")
DistributedMode = _choices("DistributedMode", "none ddp fsdp")
DdpBackend = _choices("DdpBackend", "nccl gloo")

# The alpha that `fixed` and `rslora` hold across ranks unless method.alpha is set.
HELD_ALPHA = 16
SPLITS = ("train", "validation", "test")
# Space a run needs in paths.results beyond its checkpoints: the record, the trainer's logs, W&B's files.
MIN_FREE_BYTES = 16 * 2**20
# trainer.max_steps of a run whose length trainer.epochs decides.
EPOCHS_DECIDE = -1
# numpy's and torch's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
# Synthetic rows hide 3 keywords among filler (cls); an LM row needs a token and its successor.
MIN_SYNTHETIC_LENGTH = {"cls": 3, "lm": 2}
MAX_SYNTHETIC_LABELS = 10  # synthetic-cls gives each class 5 of its 50 keyword tokens
BNB_OPTIMIZERS = ("paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit")
# A method's name starts its run id (lab.record.run_id): slug-safe as it is.
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PEFT_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")
# LoRA's own keys (mapped onto LoraConfig by lab.methods) and the value that leaves them unset.
LORA_ONLY_KEYS = {"scaling": None, "alpha": None, "use_dora": False, "dropout": 0.0, "bias": "none"}

# Resolvers used by the YAML (`alpha: ${lora_alpha:${method.scaling},${rank}}`); registered once per process.
if not OmegaConf.has_resolver("lora_alpha"):
    # An unknown scaling gives None here, so that validate reports method.scaling rather than alpha.
    OmegaConf.register_new_resolver(
        "lora_alpha", lambda scaling, rank: (2 * rank if rank is not None else None) if scaling == "alpha_2r"
        else HELD_ALPHA if scaling in Scaling.__members__ else None)
if not OmegaConf.has_resolver("lab_scale"):
    # A peft option that follows the rank (AdaLoRA's target_r: half its init_r): a whole number >= 1.
    OmegaConf.register_new_resolver(
        "lab_scale", lambda value, factor: max(1, round(value * factor)) if isinstance(value, int) else None)
if not OmegaConf.has_resolver("lab_cache"):
    OmegaConf.register_new_resolver("lab_cache", default_cache_dir)
if not OmegaConf.has_resolver("lab_slug"):
    # A name inside a folder path (a sweep folder named after its dataset) follows the run id's rule.
    OmegaConf.register_new_resolver("lab_slug", slug)
if not OmegaConf.has_resolver("lab_file_stem"):
    # A task read from a file is named after it (reviews.csv -> reviews), so two tasks never share a run
    # id, a sweep folder or a table cell; dataset.name=... still names it.
    OmegaConf.register_new_resolver("lab_file_stem",
                                    lambda path, default: os.path.splitext(os.path.basename(str(path)))[0] or default
                                    if path else default)


@dataclass
class QuantSchema:
    type: QuantType = QuantType.nf4
    double_quant: bool = True
    compute_dtype: ComputeDtype = ComputeDtype.auto


@dataclass
class MethodSchema:
    """A method is a file, conf/method/<name>.yaml (docs/methods.md): these keys are all a method file
    sets. The LoRA family's own keys (scaling, alpha, use_dora, dropout, bias) map onto peft's LoraConfig
    (lab.methods.LORA_KEYS); every other adapter states its peft options under `peft`, in peft's names."""

    name: str = "lora"
    # The method's name in tables and figures (analysis); None: the name.
    label: Optional[str] = None
    # peft's PeftType (LORA, VERA, IA3, ...) whose config class `peft` fills; None: no adapter, every
    # weight trains (full fine-tuning).
    peft_type: Optional[str] = None
    # The peft config key that the run's `rank` sets (r, init_r, num_virtual_tokens, ...); None: the
    # method has no capacity knob and takes no rank.
    capacity: Optional[str] = None
    # Whether peft and bitsandbytes can put this adapter on a 4-bit base (base=4bit).
    allows_4bit: bool = False
    # Further keyword arguments of peft's config class, as data (peft's own names).
    peft: dict = field(default_factory=dict)
    learning_rate: float = 2e-3
    # None: a record's config from before method.scaling existed (alpha as given, scale alpha/r).
    scaling: Optional[Scaling] = None
    alpha: Optional[float] = None
    use_dora: bool = False
    dropout: float = 0.0
    targets: Any = "qv"
    bias: LoraBias = LoraBias.none
    quant: Optional[QuantSchema] = None
    optimizer: Optimizer = Optimizer.auto


@dataclass
class ModelSchema:
    name: str = "???"
    task: Task = Task.cls
    source: ModelSource = ModelSource.tiny
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
    task: Task = Task.cls
    source: DatasetSource = DatasetSource.synthetic
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
    # Labels of a file that differ only by case or surrounding spaces (`pos`, `Pos `) are refused, named;
    # true folds them into one (lower case, stripped). Enters the run id only when true.
    fold_labels: bool = False


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
    lr_scheduler: LrScheduler = LrScheduler.linear
    # Steps between evaluations inside training; a number in (0, 1) is that share of the run's steps.
    eval_steps: Optional[Any] = None
    # Stop when the validation loss has not improved for this many evaluations, and keep the best
    # checkpoint (the length rule of sweeps/method_comparison.yaml); null: train to max_steps / epochs.
    early_stopping_patience: Optional[int] = None
    logging_steps: Optional[int] = None
    gradient_checkpointing: bool = False
    precision: Precision = Precision.auto
    save_steps: Optional[int] = None
    threads: Optional[int] = None


@dataclass
class LoggerSchema:
    name: Logger = Logger.none
    project: str = "lab"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.auto
    group: Optional[str] = None
    tags: list = field(default_factory=list)
    # Seconds wandb.init may take (W&B's own default is 90): with a key but no network, a job waits
    # this long, then trains without W&B and notes why under the record's `logging.error`.
    init_timeout: float = 15.0


@dataclass
class PathsSchema:
    results: str = "results"
    cache: str = "${lab_cache:}"


@dataclass
class DistributedSchema:
    mode: DistributedMode = DistributedMode.none
    # FSDP only: parameters, gradients and optimizer state live on the host between uses.
    cpu_offload: bool = False
    reshard_after_forward: bool = True
    find_unused_parameters: Optional[bool] = None
    backend: Optional[DdpBackend] = None


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
    device: Device = Device.auto
    skip_finished: bool = True
    # Refuse a run whose estimated peak memory exceeds what the device has free (lab.memory.preflight).
    memory_check: bool = True
    sweep: Optional[dict] = None


def compose(overrides: list[str] | tuple = (), validated: bool = True, hydra: bool = False) -> DictConfig:
    """The config `lab-train <overrides>` runs, composed outside the app (estimator, bench, tests).

    hydra: keep Hydra's own node (launcher, sweeper), as the app sees it; the result is then not validated.
    """
    if GlobalHydra.instance().is_initialized():
        raise RuntimeError("lab.config.compose runs outside a Hydra app; inside one, pass the app's cfg")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=hydra)
    return validate(cfg) if validated and not hydra else cfg


def validate(cfg: DictConfig) -> DictConfig:
    """Return the run config merged onto the schema, or raise ConfigError."""
    # Rank first: other keys interpolate it (alpha = 2r), and a bad rank must be reported as itself.
    if OmegaConf.select(cfg, "method.capacity", default=None) is not None and "rank" in cfg:
        _positive_int("rank", cfg.rank)
    merged = _merge_onto_schema(_from_before_method_files(cfg))
    for check in (_check_names, _check_method, _check_base, _check_adapter, _check_task, _check_architecture,
                  _check_trainer, _check_distributed):
        check(merged)
    _positive_int("seed", merged.seed, minimum=0)
    if merged.seed > MAX_SEED:
        raise ConfigError("seed", merged.seed, f"an integer in [0, {MAX_SEED}] (2**32 - 1)")
    return merged


# The methods there were before a method was a file (the Method enum): all three LoRA, rank as r.
METHODS_BEFORE_FILES = ("lora", "qlora", "dora")


def _from_before_method_files(cfg: DictConfig) -> DictConfig:
    """A config written before methods were files (an older record's) names no peft_type: its lora,
    qlora or dora was LoRA with `rank` as r, and read so it keeps its meaning and its run id."""
    method = cfg.get("method") if OmegaConf.is_dict(cfg) else None
    if method is None or "peft_type" in method or method.get("name") not in METHODS_BEFORE_FILES:
        return cfg
    return OmegaConf.merge(cfg, {"method": {"peft_type": "LORA", "capacity": "r", "allows_4bit": True}})


def _merge_onto_schema(cfg: DictConfig) -> DictConfig:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunSchema), cfg)
        OmegaConf.resolve(merged)
        # A credential's value (hub.token=..., +dataset.hub.auth=...) is redacted wherever it turns up.
        remember_secret_keys(OmegaConf.to_container(merged))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        reason = str(err).splitlines()[0]
        choices = re.search(r"expected one of \[(.*)\]", reason)
        raise ConfigError(key, getattr(err, "value", None),
                          f"one of {choices.group(1)}" if choices else reason) from None
    return merged


def _positive_int(key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


def _positive_finite(key: str, value: Any) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, value, "a finite number > 0")


def _check_names(merged: DictConfig) -> None:
    """Names enter run ids and folders through lab.paths.slug; a control character is never meant."""
    for key in ("model.name", "dataset.name"):
        name = OmegaConf.select(merged, key)
        if not name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ConfigError(key, name, "a non-empty name without control characters (NUL, newline, tab)")


def _check_method(merged: DictConfig) -> None:
    """The method's name, rank against its capacity knob, the LoRA-only keys, the learning rate."""
    method, rank = merged.method, merged.rank
    if not METHOD_NAME.fullmatch(method.name or ""):
        raise ConfigError("method.name", method.name, "letters, digits and . _ + - (it starts the run id)")
    if method.peft_type is None:
        _check_full(merged)
    else:
        if not PEFT_TYPE.fullmatch(method.peft_type):
            raise ConfigError("method.peft_type", method.peft_type, "a peft PeftType name (LORA, VERA, IA3, ...)")
        if method.capacity is None and rank is not None:
            raise ConfigError("rank", rank, f"no rank with method={method.name}: it has no capacity knob "
                              "(method.capacity is null)")
        if method.capacity is not None:
            _positive_int("rank", rank)
            if method.capacity in method.peft:
                raise ConfigError(f"method.peft.{method.capacity}", method.peft[method.capacity],
                                  f"unset: `rank` sets {method.capacity} for method={method.name}")
        if method.peft_type != "LORA":
            _check_no_lora_keys(method)
    if method.name == "dora" and not method.use_dora:
        raise ConfigError("method.use_dora", False, "true with method=dora (use method=lora for plain LoRA)")
    if method.name == "lora" and method.use_dora:
        raise ConfigError("method.use_dora", True, "false with method=lora (use method=dora for DoRA)")
    if method.name == "qlora" and method.quant is None:
        raise ConfigError("method.quant", None, "a quant section (type, double_quant, compute_dtype)")
    _positive_finite("method.learning_rate", method.learning_rate)


def _check_full(merged: DictConfig) -> None:
    """A method without an adapter trains every weight: no rank, nothing to scale, no 4-bit base."""
    method, rank = merged.method, merged.rank
    if rank is not None:
        raise ConfigError("rank", rank, f"no rank with method={method.name} (full fine-tuning trains every weight)")
    if method.scaling is not None or method.use_dora:
        key, value = ("method.scaling", method.scaling) if method.scaling is not None else ("method.use_dora", True)
        raise ConfigError(key, value, f"nothing with method={method.name}: it has no adapter to scale or decompose")
    if method.capacity is not None:
        raise ConfigError("method.capacity", method.capacity, "null without method.peft_type (no adapter)")


def _check_no_lora_keys(method: DictConfig) -> None:
    """LoRA's own keys mean nothing to another peft type: set there, they would be silently ignored."""
    for key, unset in LORA_ONLY_KEYS.items():
        if method[key] != unset:
            raise ConfigError(f"method.{key}", method[key],
                              f"{unset} with method={method.name} (method.{key} is LoRA's; set "
                              f"{method.peft_type}'s own options under method.peft)")


def _check_base(merged: DictConfig) -> None:
    """A 4-bit base (method.quant, set by base=4bit) only under an adapter peft has 4-bit layers for."""
    method = merged.method
    if method.quant is None:
        return
    if method.peft_type is None:
        raise ConfigError("base", "4bit", f"a full-precision base with method={method.name}: 4-bit weights "
                          "do not train (a 4-bit base takes an adapter: " + ", ".join(methods_on_4bit()) + ")")
    if not method.allows_4bit:
        raise ConfigError("base", "4bit", f"a full-precision base with method={method.name}: peft has no "
                          f"bitsandbytes 4-bit layer for {method.peft_type}; the methods that take a 4-bit base: "
                          + ", ".join(methods_on_4bit()))


def methods_on_4bit(conf_dir: str | None = None) -> list[str]:
    """The shipped method files that say `allows_4bit: true` (a file inherits it from its defaults)."""
    folder = os.path.join(conf_dir or CONF_DIR, "method")

    def allows(name: str) -> bool:
        path = os.path.join(folder, f"{name}.yaml")
        if not os.path.isfile(path):
            return False
        node = OmegaConf.load(path)
        own = OmegaConf.select(node, "method.allows_4bit", default=None)
        if own is not None:
            return bool(own)
        parents = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        return any(allows(parent) for parent in parents)

    return sorted(f.removesuffix(".yaml") for f in os.listdir(folder) if f.endswith(".yaml")
                  and allows(f.removesuffix(".yaml")))


def _check_adapter(merged: DictConfig) -> None:
    """LoRA's alpha against the scaling convention and its dropout; the targets (a set of the model,
    names, or null for peft's own default)."""
    method, rank = merged.method, merged.rank
    if method.peft_type is None:
        return
    if method.peft_type == "LORA":
        if method.alpha is None or not isinstance(method.alpha, (int, float)) or method.alpha <= 0:
            raise ConfigError("method.alpha", method.alpha, "a number > 0")
        if method.scaling == "alpha_2r" and method.alpha != 2 * rank:
            raise ConfigError("method.alpha", method.alpha,
                              f"2 * rank = {2 * rank} with method.scaling=alpha_2r; to hold alpha at "
                              f"{method.alpha} across ranks set method.scaling=fixed (or rslora)")
        if not 0 <= method.dropout < 1:
            raise ConfigError("method.dropout", method.dropout, "a number in [0, 1)")
    targets = method.targets
    if targets is None:
        return
    if isinstance(targets, str):
        if targets not in merged.model.target_sets:
            sets = ", ".join(merged.model.target_sets) or "(none defined)"
            raise ConfigError("method.targets", targets,
                              f"a target set of model {merged.model.name} ({sets}) or a list of module names")
    elif not OmegaConf.is_list(targets) or not targets or not all(isinstance(t, str) for t in targets):
        raise ConfigError("method.targets", targets, "a target set name or a non-empty list of module names")


def _check_task(merged: DictConfig) -> None:
    """The dataset fits the model's task, and its split sizes are counts."""
    model, data = merged.model, merged.dataset
    _positive_int("model.max_length", model.max_length)
    if data.task != model.task:
        raise ConfigError("dataset", data.name,
                          f"a dataset for task '{model.task}' (model {model.name} is a '{model.task}' model; "
                          f"{data.name} is '{data.task}')")
    for split in data.sizes:
        if split not in SPLITS:
            raise ConfigError("dataset.sizes", split, "one of " + ", ".join(SPLITS))
    for split in SPLITS:
        size = data.sizes.get(split)
        # Real data may give the training split whatever validation and test leave over, and size
        # validation and test as a share of the file (lab.data.sources.AUTO_SIZES).
        if data.source != "synthetic" and size == ("rest" if split == "train" else "auto"):
            continue
        if split == "train" and data.source != "synthetic" and size is None:
            continue
        _positive_int(f"dataset.sizes.{split}", size)
    _check_labels(data)
    if data.source == "file" and data.path:
        # Resolved here, so a record says which file it read, whatever folder the command ran in.
        data.path = resolve_file(data.path)


# Bounds on an architecture's sizes, each a few times the largest published model's (Llama 3.1 405B:
# 126 layers, width 16,384, MLP 53,248; Gemma: a 256k vocabulary): a typo such as 1e6 layers answers
# at once instead of building a million layers on the meta device. GPT-2's names map to the same sizes.
ARCHITECTURE_BOUNDS = {"num_hidden_layers": 1024, "hidden_size": 131_072, "num_attention_heads": 4096,
                       "num_key_value_heads": 4096, "intermediate_size": 1_048_576, "vocab_size": 4_194_304,
                       "max_position_embeddings": 4_194_304, "head_dim": 65_536}
ARCHITECTURE_ALIASES = {"n_layer": "num_hidden_layers", "n_embd": "hidden_size", "n_head": "num_attention_heads",
                        "n_inner": "intermediate_size", "n_positions": "max_position_embeddings"}


def architecture_sizes(arch: dict, key: str = "model.architecture") -> dict:
    """The sizes of an architecture (config.json fields), each checked: a whole number in [1, bound];
    heads divide the width (unless head_dim sets it) and key/value heads divide the heads."""
    sizes = {}
    for name, value in arch.items():
        canonical = ARCHITECTURE_ALIASES.get(name, name)
        if canonical not in ARCHITECTURE_BOUNDS or value is None:  # null: the library's default (GPT-2's n_inner)
            continue
        bound = ARCHITECTURE_BOUNDS[canonical]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise ConfigError(f"{key}.{name}", value, f"a whole number in [1, {bound:,}]")
        sizes[canonical] = value
    width, heads, kv = (sizes.get(k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads"))
    if width and heads and "head_dim" not in sizes and width % heads:
        raise ConfigError(f"{key}.num_attention_heads", heads, f"a divisor of hidden_size {width} (each head takes "
                          "an equal share of the width), or set head_dim")
    if heads and kv and heads % kv:
        raise ConfigError(f"{key}.num_key_value_heads", kv, f"a divisor of num_attention_heads {heads}")
    return sizes


def _check_architecture(merged: DictConfig) -> None:
    """A model given by its architecture (tiny models, lab-plan): sizes in bounds, and model.max_length
    within its positions (else the run would fail at its first batch with a tensor-size error)."""
    if merged.model.architecture is None:
        return
    arch = OmegaConf.to_container(merged.model.architecture, resolve=True)
    positions = architecture_sizes(arch).get("max_position_embeddings")
    check_max_length(merged, positions)


# Methods whose `rank` virtual tokens are put before every input: they take positions like real tokens,
# which is an error past an encoder's learned position table (BERT, RoBERTa, MiniLM: the suite's
# classifiers); a decoder's rotary positions run on past its trained length.
PREPENDS_VIRTUAL_TOKENS = ("PROMPT_TUNING", "P_TUNING")


def check_max_length(cfg: DictConfig, positions: int | None) -> None:
    """model.max_length, plus the virtual tokens of a method that prepends them, fits the model's
    positions (else the run would fail at its first batch with a tensor-size error)."""
    max_length = cfg.model.max_length
    if not positions:
        return
    if max_length > positions:
        raise ConfigError("model.max_length", max_length,
                          f"at most the model's {positions} positions (max_position_embeddings)")
    prepends = cfg.method.get("peft_type") in PREPENDS_VIRTUAL_TOKENS and cfg.model.task == "cls"
    if prepends and cfg.rank and max_length + cfg.rank > positions:
        raise ConfigError("rank", cfg.rank, f"at most {positions - max_length} virtual tokens for {cfg.method.name}: "
                          f"they come before each input of up to model.max_length={max_length} tokens, within the "
                          f"model's {positions} positions (or lower model.max_length)")


def _check_labels(data: DictConfig) -> None:
    """A classification task has at least two classes; synthetic rows have room for their keywords."""
    if data.task == "cls" and data.num_labels is not None:
        top = MAX_SYNTHETIC_LABELS if data.source == "synthetic" else None
        if isinstance(data.num_labels, bool) or data.num_labels < 2 or (top and data.num_labels > top):
            raise ConfigError("dataset.num_labels", data.num_labels,
                              f"an integer in [2, {top}] for synthetic data" if top else "an integer >= 2")
    if data.task == "cls" and data.labels is not None and len(set(map(str, data.labels))) < 2:
        raise ConfigError("dataset.labels", list(data.labels), "a list of at least two distinct labels")
    if data.source == "synthetic":
        _positive_int("dataset.length", data.length, minimum=MIN_SYNTHETIC_LENGTH[data.task])


def _check_trainer(merged: DictConfig) -> None:
    trainer = merged.trainer
    _positive_int("trainer.batch_size", trainer.batch_size)
    _positive_int("trainer.eval_batch_size", trainer.eval_batch_size)
    if trainer.epochs is None:
        _positive_int("trainer.max_steps", trainer.max_steps)
    elif trainer.epochs <= 0:
        raise ConfigError("trainer.epochs", trainer.epochs, "a number > 0, or null to train by max_steps")
    else:
        # Epochs decide the length and max_steps is not used: one config (and one run id, one table
        # cell) for one training, whatever max_steps was given. -1 is transformers' own "by epochs".
        trainer.max_steps = EPOCHS_DECIDE
    _positive_finite("trainer.learning_rate", trainer.learning_rate)
    if trainer.max_grad_norm is not None and not (trainer.max_grad_norm > 0 and math.isfinite(trainer.max_grad_norm)):
        raise ConfigError("trainer.max_grad_norm", trainer.max_grad_norm, "a finite number > 0, or null for no clipping")
    for key in ("save_steps", "threads", "logging_steps", "early_stopping_patience"):
        if trainer[key] is not None:
            _positive_int(f"trainer.{key}", trainer[key])
    _check_eval_steps(trainer.eval_steps)
    if trainer.early_stopping_patience is not None and trainer.eval_steps is None:
        raise ConfigError("trainer.eval_steps", None, "a number of steps (or a share of them in (0, 1)) when "
                          "trainer.early_stopping_patience is set: early stopping reads the evaluations")
    # transformers 5 reads a warm-up below 1 as a share of the steps and 1 or more as a step count:
    # a ratio must stay below 1 to mean what its name says.
    if not 0 <= trainer.warmup_ratio < 1:
        raise ConfigError("trainer.warmup_ratio", trainer.warmup_ratio, "a share of the training steps in [0, 1)")
    if not (trainer.weight_decay >= 0 and math.isfinite(trainer.weight_decay)):
        raise ConfigError("trainer.weight_decay", trainer.weight_decay, "a finite number >= 0")


def _check_eval_steps(value: Any) -> None:
    if value is None or (isinstance(value, float) and 0 < value < 1):
        return
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _positive_int("trainer.eval_steps", value)


def _check_distributed(merged: DictConfig) -> None:
    dist = merged.distributed
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
    """The results folder exists (it is made here) and takes a file: tried, not asked of os.access,
    which root always passes (`/proc/lab`). A nearly full disk is refused before anything trains."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lab-probe-") as probe:
            probe.write(b"x" * 1024)
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(path).free
    except OSError as err:
        raise ConfigError("paths.results", path, f"a directory this user can write to ({err.strerror})") from None
    if free < MIN_FREE_BYTES:
        raise ConfigError("paths.results", path, f"a directory with at least {MIN_FREE_BYTES // 2**20} MiB free for "
                          f"records and checkpoints (it has {free / 2**20:.1f} MiB)")


def hydra_mode() -> RunMode | None:
    """How Hydra runs this process's job (RUN or MULTIRUN); None outside a Hydra app (tests, the benchmark)."""
    try:
        return HydraConfig.get().mode
    except ValueError:
        return None


def in_multirun() -> bool:
    return hydra_mode() == RunMode.MULTIRUN
