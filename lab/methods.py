"""The methods: full fine-tuning, or any peft adapter its method file (conf/method/<name>.yaml) describes
as data, on a full-precision or a bitsandbytes 4-bit base (QLoRA is LoRA on the 4-bit base)."""

from __future__ import annotations

import copy
import math
import re

import torch
from omegaconf import DictConfig, OmegaConf
from peft import (get_peft_config, get_peft_model, get_peft_model_state_dict, prepare_model_for_kbit_training,
                  set_peft_model_state_dict)
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils import ModulesToSaveWrapper
from transformers import BitsAndBytesConfig

from lab.decisions import compute_dtype, four_bit
from lab.errors import ConfigError


def quantization_config(cfg: DictConfig, device: str, head_modules: list[str]):
    if not four_bit(cfg):
        return None
    quant = cfg.method.quant
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=str(quant.type),
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(cfg, device),
        # FSDP shards floating-point tensors only: the packed 4-bit codes are stored in the compute dtype.
        bnb_4bit_quant_storage=compute_dtype(cfg, device) if OmegaConf.select(cfg, "distributed.mode") == "fsdp"
        else torch.uint8,
        # Newly initialised heads must stay in full precision to train; transformers matches these
        # patterns from the start of a module's full name, hence the leading `.*`.
        llm_int8_skip_modules=[f".*{name}" for name in head_modules] or None,
    )


def target_modules(cfg: DictConfig) -> list[str] | None:
    """The module names the adapter wraps; None: peft's own default for the architecture (or none)."""
    targets = cfg.method.targets
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = cfg.model.target_sets[targets]
    return list(OmegaConf.to_container(targets) if OmegaConf.is_config(targets) else targets)


def linear_module_names(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Conv1D")}


def check_targets(model: torch.nn.Module, cfg: DictConfig) -> list[str] | None:
    """Each target must name a module of the model outside its heads (peft matches a name or a dotted
    suffix of one): a linear layer for every adapter but LayerNorm tuning, whose targets are norms."""
    targets = target_modules(cfg)
    if targets is None:
        return None
    heads = tuple(cfg.model.head_modules)
    norms = cfg.method.peft_type == "LN_TUNING"
    candidates = {n: m for n, m in (model.named_modules() if norms else linear_module_names(model).items())
                  if n and not any(h in n.split(".") for h in heads)}
    if norms:
        candidates = {n: m for n, m in candidates.items() if "norm" in type(m).__name__.lower()}
    suffixes = sorted({n.split(".")[-1] for n in candidates})
    kind = "norm" if norms else "linear"
    for target in targets:
        matched = [m for n, m in candidates.items() if n == target or n.endswith("." + target)]
        if not matched:
            raise ConfigError("method.targets", target, f"module names of {cfg.model.name}'s {kind} layers: "
                              + ", ".join(suffixes))
        # A LoRA update of rank r cannot exceed the matrix's smaller side (VeRA's shared r can).
        if cfg.method.peft_type in ("LORA", "ADALORA") and cfg.rank is not None:
            smallest = min(min(m.in_features, m.out_features) for m in matched)
            if cfg.rank > smallest:
                raise ConfigError("rank", cfg.rank, f"at most {smallest}, the smaller side of the '{target}' matrices")
    return targets


# The LoRA family's own keys (lab.config.LORA_ONLY_KEYS) as LoraConfig spells them.
LORA_KEYS = {"alpha": "lora_alpha", "dropout": "lora_dropout", "bias": "bias", "use_dora": "use_dora"}


def peft_config_dict(cfg: DictConfig, targets: list[str] | None, total_steps: int | None = None) -> dict:
    """The method file's peft config as peft's `get_peft_config` takes it: its `peft` options, the rank
    at its capacity key, the targets, the task type and the heads that train beside the adapter."""
    method = cfg.method
    options = OmegaConf.to_container(method.peft, resolve=True) if method.peft else {}
    out = {"peft_type": str(method.peft_type),
           "task_type": "SEQ_CLS" if cfg.model.task == "cls" else "CAUSAL_LM", **options}
    if method.capacity is not None:
        out[str(method.capacity)] = cfg.rank
    if targets is not None:
        out["target_modules"] = targets
    if cfg.model.head_modules:
        out["modules_to_save"] = list(cfg.model.head_modules)
    if method.peft_type == "LORA":
        out.update({peft_key: (str(method[key]) if key == "bias" else method[key]) for key, peft_key in LORA_KEYS.items()})
        out["use_rslora"] = method.scaling == "rslora"
    if method.peft_type == "ADALORA" and "total_step" not in out:
        out["total_step"] = total_steps or adalora_steps_unknown(cfg, out)
    return out


def adalora_steps_unknown(cfg: DictConfig, options: dict) -> int:
    """AdaLoRA's schedule is in steps: trainer.max_steps, or (a run by epochs, before its data is read:
    the estimator) the shortest schedule peft accepts, which shapes nothing that is counted."""
    if cfg.trainer.max_steps > 0:
        return int(cfg.trainer.max_steps)
    return int(options.get("tinit", 0)) + int(options.get("tfinal", 0)) + 1


def training_steps(cfg: DictConfig, train_rows: int, world_size: int = 1) -> int:
    """The optimizer steps the Trainer will take: max_steps, or epochs x batches per epoch as
    transformers counts them (ceil of the product)."""
    if cfg.trainer.epochs is None:
        return int(cfg.trainer.max_steps)
    per_epoch = math.ceil(train_rows / (cfg.trainer.batch_size * world_size))
    return math.ceil(cfg.trainer.epochs * per_epoch)


def peft_config(cfg: DictConfig, targets: list[str] | None, total_steps: int | None = None):
    """peft's own config object for the method, or a ConfigError naming what peft refused."""
    data = peft_config_dict(cfg, targets, total_steps)
    if data["peft_type"] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ConfigError("method.peft_type", data["peft_type"],
                          "a peft 0.22 PeftType: " + ", ".join(sorted(str(t.value) for t in PEFT_TYPE_TO_CONFIG_MAPPING)))
    try:
        return get_peft_config(data)
    except TypeError as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        key = unknown.group(1) if unknown else "?"
        raise ConfigError(f"method.peft.{key}", data.get(key), f"an option of peft's "
                          f"{PEFT_TYPE_TO_CONFIG_MAPPING[data['peft_type']].__name__}") from None
    except ValueError as err:
        options = OmegaConf.to_container(cfg.method.peft, resolve=True) if cfg.method.peft else {}
        raise ConfigError("method.peft", options, f"options peft's {PEFT_TYPE_TO_CONFIG_MAPPING[data['peft_type']].__name__} "
                          f"accepts with rank={cfg.rank} and trainer.max_steps={cfg.trainer.max_steps} (peft: {err})") from None


def apply_method(model, cfg: DictConfig, device: str, total_steps: int | None = None):
    """Return the model ready to train: every weight (no peft_type), or the method's peft adapter on a
    frozen (4-bit, with base=4bit) base. total_steps: the run's optimizer steps (AdaLoRA's schedule)."""
    if cfg.method.peft_type is None:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if four_bit(cfg) and not any(type(m).__name__ == "Linear4bit" for m in model.modules()):
        raise ConfigError("method", cfg.method.name, f"a model with linear layers to quantize ({cfg.model.name} has "
                          "none left after model.head_modules)")
    targets = check_targets(model, cfg)
    config = peft_config(cfg, targets, total_steps)
    if four_bit(cfg):
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                # bitsandbytes repacks a 4-bit weight in place on its first no-grad CPU forward and then
                # computes in bf16; keep evaluation in the configured compute dtype and the base untouched.
                module.support_avx512bf16_for_cpu = False
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.trainer.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        # peft's refusals of a config for this model (no default targets for its architecture, a
        # target type the adapter has no layer for): the user's choice, said as one.
        raise ConfigError("method.targets", OmegaConf.select(cfg, "method.targets"),
                          f"targets method={cfg.method.name} can wrap in {cfg.model.name} (peft: {err})") from None


def head_parameters(model) -> set[int]:
    """ids of the task heads' parameters (peft's ModulesToSaveWrapper: the original and its trained copy)."""
    return {id(p) for module in model.modules() if isinstance(module, ModulesToSaveWrapper)
            for p in module.parameters()}


def count_params(model) -> dict[str, int]:
    """Trainable and total parameters as peft counts them (4-bit weights at their logical size), and
    the adapter's own: every trainable parameter but the task heads that train in full beside it
    (for a small model the heads can outnumber the adapter many times), whatever the adapter names
    its parameters (lora_A, vera_lambda_b, hada_w1, oft_R, prompt embeddings, ...). Full fine-tuning
    has no adapter: 0."""
    if not hasattr(model, "get_nb_trainable_parameters"):
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return {"trainable": int(trainable), "total": int(total), "adapter": 0}
    trainable, total = model.get_nb_trainable_parameters()
    heads = head_parameters(model)
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in heads)
    return {"trainable": int(trainable), "total": int(total), "adapter": int(adapter)}


def dequantized_merged_copy(peft_model, load_base):
    """The trained adapter merged into a plain floating-point copy of the base.

    For QLoRA the copy's targeted weights are the dequantized 4-bit weights, so that merged and
    on-the-fly outputs must agree up to float rounding (re-quantizing after the merge would not).
    `load_base()` returns a fresh unquantized base model.
    """
    import bitsandbytes.functional as bnbf  # seconds to import: only where a 4-bit weight is dequantized

    base = load_base()
    quantized = {n: m for n, m in peft_model.base_model.model.named_modules() if type(m).__name__ == "Linear4bit"}
    plain = dict(base.named_modules())
    with torch.no_grad():
        for name, module in quantized.items():
            weight = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
            target = plain[name.replace(".base_layer", "")]
            target.weight.copy_(weight.to(target.weight.dtype))
    replica = get_peft_model(base, copy.deepcopy(peft_model.peft_config["default"]))
    set_peft_model_state_dict(replica, get_peft_model_state_dict(peft_model))
    return replica.merge_and_unload()
