"""Parameters and memory of any configured model, from its architecture alone.

The model is built on the meta device (shapes and dtypes, no storage), the method is applied with
the suite's own `methods.apply_method` (so peft matches targets and sizes adapters exactly as in a
run), and the numbers follow from the real libraries' storage rules:

- parameters: peft's `get_nb_trainable_parameters`, as `methods.count_params` reports them in a run
  (DoRA's magnitude vectors included: peft builds them here too, on a 4-bit base from a meta stand-in
  for the dequantized weight);
- weights by storage: each parameter at its dtype; for QLoRA, transformers' own
  `replace_with_bnb_linear` turns the layers a 4-bit load would quantize into bitsandbytes
  Linear4bit with packed uint8 meta weights (so peft wraps and counts them as in a run), and each
  is stored at NF4 size (`nf4_bytes`: packed codes + quantization constants); the rest stay as
  peft's `prepare_model_for_kbit_training` leaves them (fp32);
- gradients: one per trainable parameter, in the parameter's dtype;
- optimizer state: torch AdamW keeps exp_avg and exp_avg_sq like the parameter plus a 4-byte fp32
  `step` per tensor; bitsandbytes' 32-bit (paged) AdamW keeps two fp32 states and a Python int;
  its 8-bit AdamW keeps both states as uint8 with one fp32 absmax per 256-element block, plus one
  shared 256-entry fp32 map per state, except for tensors under 4096 elements and embeddings (the
  Trainer overrides those to 32 bits), which keep fp32 states;
- offload: `offload="optimizer"` (ZeRO-Offload style) puts the optimizer state in a host column,
  `offload="full"` (FSDP CPU offload) the weights and gradients as well; activations and buffers
  stay on the device (the one layer FSDP gathers onto the device at a time is not counted);
- activations saved for backward: `lab.memory.activations` (per-family formulas).

The device, compute dtype, precision and optimizer are decided by `lab.decisions`, as in a run.

Every figure is in bytes. GB = 1e9 bytes and GiB = 2**30 bytes where tables convert.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager

import torch
from omegaconf import DictConfig, OmegaConf
from peft.tuners.lora import dora
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.quantizers.base import HfQuantizer
from transformers.utils import logging as hf_logging

from lab import methods
from lab.config import compose
from lab.decisions import autocast_dtype, choose_optimizer, compute_dtype, four_bit
from lab.memory.activations import estimate_saved
from lab.memory.measure import quant_constant_bytes
from lab.models import checkpoint_path
from lab.paths import CONF_DIR, default_cache_dir

# bitsandbytes' defaults, checked against a real Linear4bit in tests/test_accounting.py.
NF4_BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
NF4_CODE_BYTES = 16 * 4  # the 16-entry fp32 NF4 (or FP4) codebook each quant_state carries
NESTED_CODE_BYTES = 256 * 4  # the 256-entry fp32 dynamic map of the second-level quantization
NESTED_OFFSET_BYTES = 4  # fp32 scalar: the mean subtracted from the absmax before quantizing it
PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages an optimizer state only from this many elements
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes' min_8bit_size: smaller tensors keep fp32 state
BNB_8BIT_BLOCKSIZE = 256  # elements per fp32 absmax of blockwise 8-bit optimizer state
BNB_QMAP_BYTES = 256 * 4  # the fp32 dynamic map each 8-bit state shares across all tensors
OFFLOAD = ("none", "optimizer", "full")


def config_for(model: str, method: str = "lora", rank: int | None = None, targets: str | None = None,
               overrides: list[str] | tuple = ()) -> DictConfig:
    """The validated run config for `model` x `method`, as `lab-train model=... method=...` would see it."""
    # The dataset only has to agree with the model's task; none is loaded.
    task = OmegaConf.load(os.path.join(CONF_DIR, "model", f"{model}.yaml")).task
    args = [f"model={model}", f"method={method}", f"dataset=synthetic-{task}", "logger=none"]
    if method != "full" and rank is not None:
        args.append(f"rank={rank}")
    if targets is not None:
        args.append(f"method.targets={targets}")
    return compose(args + list(overrides))


def model_config(mcfg: DictConfig, num_labels: int | None = None, cache_dir: str | None = None):
    """The transformers config: from `model.architecture`, else from the checkpoint's config.json."""
    if mcfg.architecture:
        arch = dict(OmegaConf.to_container(mcfg.architecture, resolve=True))
        model_type = arch.pop("model_type")
        with quiet_transformers():  # its checks of token ids against the vocabulary concern a real load
            config = AutoConfig.for_model(model_type, **arch)
    else:
        cache = os.path.expanduser(cache_dir or default_cache_dir())
        config = AutoConfig.from_pretrained(checkpoint_path(mcfg, cache), trust_remote_code=mcfg.trust_remote_code)
    if mcfg.task == "cls":
        config.num_labels = num_labels or 2
    return config


@contextmanager
def quiet_transformers():
    """Building on the meta device makes transformers and peft warn about what a real load would do
    (missing weights, checkpointing names deprecated in v6): nothing a planner's user can act on."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)


def meta_base(cfg: DictConfig, dtype: torch.dtype, num_labels: int | None = None):
    """The architecture on the meta device, as `from_pretrained(dtype=dtype)` would lay it out."""
    config = model_config(cfg.model, num_labels, cfg.paths.cache)
    auto = AutoModelForSequenceClassification if cfg.model.task == "cls" else AutoModelForCausalLM
    with quiet_transformers(), torch.device("meta"):
        model = auto.from_config(config, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
    return model


def _bnb_config(cfg: DictConfig, dtype: torch.dtype):
    qconfig = methods.quantization_config(cfg, "cpu", list(cfg.model.head_modules))
    qconfig.bnb_4bit_compute_dtype = dtype
    return qconfig


def _not_converted(model, cfg: DictConfig) -> list[str]:
    """The layers a 4-bit load keeps unquantized, decided as `Bnb4BitHfQuantizer` does: our head
    modules (`llm_int8_skip_modules`) when there are any, else transformers' defaults (tied weights,
    the output embedding, the last module); plus the model's `_keep_in_fp32_modules`."""
    return HfQuantizer.get_modules_to_not_convert(model, _bnb_config(cfg, torch.float32).llm_int8_skip_modules,
                                                  getattr(model, "_keep_in_fp32_modules", None))


def quantize_on_meta(model, cfg: DictConfig, dtype: torch.dtype) -> dict[int, int]:
    """Swap in bitsandbytes Linear4bit layers as a real QLoRA load does, with packed uint8 meta weights.

    transformers' own `replace_with_bnb_linear` picks and replaces the layers; each weight then gets
    the shape bitsandbytes stores ((n + 1) // 2 bytes, 1), so peft counts and wraps it as in a run.
    Returns {id(weight): logical number of elements}.
    """
    # Seconds to import (bitsandbytes loads torch's compiler): only a 4-bit estimate needs them.
    import bitsandbytes as bnb
    from transformers.integrations import replace_with_bnb_linear

    qconfig = _bnb_config(cfg, dtype)
    with quiet_transformers():
        replace_with_bnb_linear(model, modules_to_not_convert=_not_converted(model, cfg), quantization_config=qconfig)
    logical = {}
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            numel = module.in_features * module.out_features
            packed = torch.empty(((numel + 1) // 2, 1), dtype=torch.uint8, device="meta")
            module.weight = bnb.nn.Params4bit(packed, requires_grad=False,
                                              compress_statistics=qconfig.bnb_4bit_use_double_quant,
                                              quant_type=qconfig.bnb_4bit_quant_type, quant_storage=torch.uint8,
                                              module=module, bnb_quantized=True)
            logical[id(module.weight)] = numel
    model.is_loaded_in_4bit = True  # what transformers sets after a 4-bit load; peft and prepare read it
    return logical


@contextmanager
def _dora_sizes_from_meta_4bit(dtype: torch.dtype):
    """DoRA initialises each magnitude vector (d_out entries, trainable) from the norm of the
    dequantized base weight. A meta 4-bit weight has no quantization state to dequantize, so peft is
    handed a meta weight of the logical shape in the dtype a real load dequantizes to."""
    dequantize = dora.dequantize_module_weight

    def shaped_like_dequantized(module):
        weight = module.weight
        if weight.device.type == "meta" and type(weight).__name__ == "Params4bit":
            return torch.empty(module.out_features, module.in_features, dtype=dtype, device="meta")
        return dequantize(module)

    dora.dequantize_module_weight = shaped_like_dequantized
    try:
        yield
    finally:
        dora.dequantize_module_weight = dequantize


def nf4_bytes(numel: int, double_quant: bool = True, blocksize: int = NF4_BLOCKSIZE) -> dict[str, int]:
    """Bytes bitsandbytes stores for one 4-bit weight of `numel` elements.

    packed: two 4-bit codes per uint8. constants: one absmax per block of `blocksize` (fp32; with
    double quantization uint8, themselves quantized in blocks of 256 with fp32 absmax, a 256-entry
    fp32 code and an fp32 offset) plus the 16-entry fp32 codebook.
    """
    blocks = math.ceil(numel / blocksize)
    if double_quant:
        constants = blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + NESTED_CODE_BYTES + NESTED_OFFSET_BYTES
    else:
        constants = 4 * blocks
    return {"packed": (numel + 1) // 2, "constants": constants + NF4_CODE_BYTES}


def measured_nf4_bytes(out_features: int, in_features: int, double_quant: bool = True,
                       quant_type: str = "nf4") -> dict[str, int]:
    """What a real bitsandbytes Linear4bit stores for one weight, quantized here on the CPU."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    plain = torch.nn.Linear(in_features, out_features, bias=False)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.float32,
                              compress_statistics=double_quant, quant_type=quant_type)
    layer.load_state_dict(plain.state_dict())
    layer = layer.to("cpu")  # bitsandbytes quantizes on this move
    weight = layer.weight
    if not getattr(weight, "bnb_quantized", False) or weight.quant_state is None:
        raise RuntimeError("bitsandbytes did not quantize the weight")
    state = weight.quant_state
    return {"packed": weight.numel() * weight.element_size(), "constants": quant_constant_bytes(weight),
            "blocksize": state.blocksize, "nested_blocksize": state.state2.blocksize if state.nested else None,
            "numel": in_features * out_features}


class Plan:
    """A configured run laid out on the meta device: the model with the method applied."""

    def __init__(self, cfg: DictConfig, device: str = "cpu", num_labels: int | None = None,
                 weights_dtype: torch.dtype | None = None):
        self.cfg, self.device = cfg, device
        self.num_labels = num_labels or (cfg.dataset.num_labels or 2 if cfg.model.task == "cls" else None)
        self.dtype = weights_dtype or compute_dtype(cfg, device)
        self.autocast = autocast_dtype(cfg, device)
        base = meta_base(cfg, self.dtype, self.num_labels)
        self.logical = quantize_on_meta(base, cfg, self.dtype) if four_bit(cfg) else {}
        # Under the meta device peft creates the adapters without storage too (not on the CPU first).
        with quiet_transformers(), torch.device("meta"), _dora_sizes_from_meta_4bit(self.dtype):
            self.model = methods.apply_method(base, cfg, device)
        self.base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # ---- parameters ----------------------------------------------------------------------------

    def params(self) -> dict[str, int]:
        """Trainable and total parameters exactly as `methods.count_params` reports them in a run."""
        return methods.count_params(self.model)

    # ---- bytes ---------------------------------------------------------------------------------

    def weight_bytes(self) -> dict[str, int]:
        """Keyed like `lab.memory.measure.weight_bytes`: `<trainable|frozen>_<storage>`."""
        out: dict[str, int] = {}
        double = bool(four_bit(self.cfg) and self.cfg.method.quant.double_quant)
        for param in self.model.parameters():
            role = "trainable" if param.requires_grad else "frozen"
            if id(param) in self.logical:
                for part, nbytes in nf4_bytes(self.logical[id(param)], double).items():
                    out[f"{role}_4bit_{part}"] = out.get(f"{role}_4bit_{part}", 0) + nbytes
            else:
                key = f"{role}_{str(param.dtype).removeprefix('torch.')}"
                out[key] = out.get(key, 0) + param.numel() * param.element_size()
        return dict(sorted(out.items()))

    def buffer_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.model.buffers())

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def gradient_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.trainable())

    def optimizer_name(self) -> str:
        return choose_optimizer(self.cfg, self.device)[1]

    def optimizer_bytes(self, optimizer: str | None = None) -> dict[str, int]:
        name = optimizer or self.optimizer_name()
        trainable = self.trainable()
        if name in ("adamw_torch", "adamw_torch_fused"):
            moments = sum(p.numel() * p.element_size() for p in trainable)
            return {"exp_avg": moments, "exp_avg_sq": moments, "step": 4 * len(trainable), "paged": 0}
        if name in ("paged_adamw_32bit", "adamw_bnb_32bit", "paged_adamw", "adamw_32bit"):
            return self._bnb_adamw_bytes(trainable, 32, name.startswith("paged"))
        if name in ("paged_adamw_8bit", "adamw_8bit", "adamw_bnb_8bit"):
            return self._bnb_adamw_bytes(trainable, 8, name.startswith("paged"))
        raise ValueError(f"optimizer {name}: no storage rule here (adamw_torch, adamw_torch_fused, "
                         "paged_adamw_32bit, adamw_bnb_32bit, paged_adamw_8bit, adamw_8bit)")

    def _bnb_adamw_bytes(self, trainable: list, bits: int, paged: bool) -> dict[str, int]:
        embeddings = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}
        out = {"state1": 0, "state2": 0, "absmax1": 0, "absmax2": 0, "paged": 0}
        for p in trainable:
            n = p.numel()
            if bits == 8 and n >= BNB_MIN_8BIT_SIZE and id(p) not in embeddings:
                per_state = n
                out["absmax1"] += 4 * math.ceil(n / BNB_8BIT_BLOCKSIZE)
                out["absmax2"] += 4 * math.ceil(n / BNB_8BIT_BLOCKSIZE)
            else:
                per_state = 4 * n
            out["state1"] += per_state
            out["state2"] += per_state
            if paged and self.device == "cuda" and n >= PAGED_MIN_NUMEL:
                out["paged"] += 2 * per_state
        if out["absmax1"]:
            out["qmap1"] = out["qmap2"] = BNB_QMAP_BYTES
        else:
            del out["absmax1"], out["absmax2"]
        return out

    def activation_bytes(self, batch: int, seq_len: int, padded: bool = False, token_types: bool = False) -> dict:
        return estimate_saved(self, batch, seq_len, padded, token_types)


def count_params(cfg: DictConfig, num_labels: int | None = None) -> dict[str, int]:
    return Plan(cfg, "cpu", num_labels).params()


def estimate(cfg: DictConfig, device: str, batch: int, seq_len: int, *, num_labels: int | None = None,
             padded: bool = False, token_types: bool = False, optimizer: str | None = None,
             weights_dtype: torch.dtype | None = None, activations: bool = True, offload: str | None = None) -> dict:
    """The memory ledger's categories for one configured run, from the architecture alone (bytes).

    padded / token_types: what the batch holds (see `activations.estimate_saved`); optimizer and
    weights_dtype override the suite's choices (e.g. 16-bit full fine-tuning); offload (one of
    OFFLOAD) defaults to the config's: `full` under distributed=fsdp_offload, else `none`.
    """
    plan = Plan(cfg, device, num_labels, weights_dtype)
    if offload is None:
        offload = "full" if cfg.get("distributed") is not None and cfg.distributed.cpu_offload else "none"
    return summarize(plan, batch, seq_len, padded=padded, token_types=token_types, optimizer=optimizer,
                     activations=activations, offload=offload)


def summarize(plan: Plan, batch: int, seq_len: int, *, padded: bool = False, token_types: bool = False,
              optimizer: str | None = None, activations: bool = True, offload: str = "none") -> dict:
    """`estimate` for a Plan as it stands (e.g. after recasting some of its parameters)."""
    if offload not in OFFLOAD:
        raise ValueError(f"offload={offload!r}: one of {', '.join(OFFLOAD)}")
    weights = plan.weight_bytes()
    opt_name = optimizer or plan.optimizer_name()
    opt = plan.optimizer_bytes(opt_name)
    out = {
        "unit": "bytes",
        "device": plan.device,
        "batch": batch,
        "seq_len": seq_len,
        "params": plan.params(),
        "weights": weights,
        "weights_total": sum(weights.values()),
        "buffers": plan.buffer_bytes(),
        "gradients": plan.gradient_bytes(),
        "optimizer": opt_name,
        "optimizer_state": sum(v for k, v in opt.items() if k != "paged"),
        "optimizer_state_paged": opt["paged"],
        "optimizer_state_by_key": {k: v for k, v in opt.items() if k != "paged"},
    }
    out["weights_gradients_optimizer"] = out["weights_total"] + out["gradients"] + out["optimizer_state"]
    if activations:
        acts = plan.activation_bytes(batch, seq_len, padded, token_types)
        out["activations"] = acts["total"]
        out["activations_detail"] = acts
        # Freed when the forward ends, before gradients exist, and at most half their bytes (bf16
        # copies of fp32 trainable weights): shown by lab-plan, never above the peak below.
        out["autocast_cache"] = acts["autocast_cache_unsaved"]
        out["peak_estimate"] = out["weights_gradients_optimizer"] + out["buffers"] + out["activations"]
    on_host = {"none": (), "optimizer": ("optimizer_state",),
               "full": ("weights_total", "gradients", "optimizer_state")}[offload]
    categories = ("weights_total", "buffers", "gradients", "optimizer_state") + (("activations",) if activations else ())
    out["offload"] = offload
    out["placement"] = {"device": {}, "host": {}}
    for key in categories:
        out["placement"]["host" if key in on_host else "device"][key.removesuffix("_total")] = out[key]
    out["device_total"] = sum(out["placement"]["device"].values())
    out["host_total"] = sum(out["placement"]["host"].values())
    return out
