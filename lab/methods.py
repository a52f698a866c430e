"""The strategies: full fine-tuning, LoRA and DoRA (peft), and QLoRA (peft on a bitsandbytes 4-bit base)."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig, OmegaConf
from peft import (LoraConfig, get_peft_model, get_peft_model_state_dict, prepare_model_for_kbit_training,
                  set_peft_model_state_dict)
from transformers import BitsAndBytesConfig

from lab.decisions import compute_dtype
from lab.errors import ConfigError


def quantization_config(cfg: DictConfig, device: str, head_modules: list[str]):
    if cfg.method.name != "qlora":
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


def target_modules(cfg: DictConfig) -> list[str]:
    targets = cfg.method.targets
    if isinstance(targets, str):
        targets = cfg.model.target_sets[targets]
    return list(OmegaConf.to_container(targets) if OmegaConf.is_config(targets) else targets)


def linear_module_names(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Conv1D")}


def check_targets(model: torch.nn.Module, cfg: DictConfig) -> list[str]:
    """Each target must name a linear layer (peft matches a name or a dotted suffix of one)."""
    targets = target_modules(cfg)
    heads = tuple(cfg.model.head_modules)
    linears = {n: m for n, m in linear_module_names(model).items() if not any(h in n.split(".") for h in heads)}
    suffixes = sorted({".".join(n.split(".")[-k:]) for n in linears for k in (1, 2)})
    for target in targets:
        matched = [m for n, m in linears.items() if n == target or n.endswith("." + target)]
        if not matched:
            raise ConfigError("method.targets", target, f"module names of {cfg.model.name}'s linear layers: "
                              + ", ".join(s for s in suffixes if "." not in s))
        smallest = min(min(m.in_features, m.out_features) for m in matched)
        if cfg.rank > smallest:
            raise ConfigError("rank", cfg.rank, f"at most {smallest}, the smaller side of the '{target}' matrices")
    return targets


def apply_method(model, cfg: DictConfig, device: str):
    """Return the model ready to train: every weight (full) or LoRA adapters on a frozen base."""
    if cfg.method.name == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if cfg.method.name == "qlora" and not any(type(m).__name__ == "Linear4bit" for m in model.modules()):
        raise ConfigError("method", "qlora", f"a model with linear layers to quantize ({cfg.model.name} has none "
                          "left after model.head_modules)")
    targets = check_targets(model, cfg)
    if cfg.method.name == "qlora":
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                # bitsandbytes repacks a 4-bit weight in place on its first no-grad CPU forward and then
                # computes in bf16; keep evaluation in the configured compute dtype and the base untouched.
                module.support_avx512bf16_for_cpu = False
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.trainer.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.method.alpha,
        lora_dropout=cfg.method.dropout,
        target_modules=targets,
        bias=str(cfg.method.bias),
        task_type="SEQ_CLS" if cfg.model.task == "cls" else "CAUSAL_LM",
        modules_to_save=list(cfg.model.head_modules) or None,
        use_rslora=cfg.method.scaling == "rslora",
        use_dora=cfg.method.use_dora,
    )
    return get_peft_model(model, lora)


def count_params(model) -> dict[str, int]:
    """Trainable and total parameters as peft counts them (4-bit weights at their logical size), and
    the adapter's own: LoRA's A and B (and DoRA's magnitudes), without the task heads that train in
    full beside them (for a small model the heads can outnumber the adapter many times)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    adapter = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "lora_" in name)
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
