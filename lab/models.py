"""Find a model's checkpoint and load it, optionally quantized to 4 bits.

Every model, the random-init tiny ones included, is loaded with `from_pretrained` from a folder,
so QLoRA always goes through the same quantize-on-load path that real checkpoints use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PreTrainedTokenizerFast)

from lab import gguf_convert
from lab.errors import ConfigError
from lab.paths import package_dir

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]


def checkpoint_path(mcfg: DictConfig, cache_dir: str) -> str:
    """A folder (or hub id) that `from_pretrained` can load."""
    if mcfg.source == "tiny":
        return _build_tiny(mcfg, cache_dir)
    if mcfg.source == "gguf":
        return gguf_convert.converted_path(mcfg, cache_dir)
    if mcfg.source == "package":
        folder = os.path.join(package_dir(mcfg.package, "model.package"), mcfg.path or "")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ConfigError("model.path", mcfg.path, f"a folder inside package {mcfg.package} with config.json "
                              "and weights")
        return folder
    if mcfg.source == "local":
        if not mcfg.path or not os.path.isdir(os.path.expanduser(mcfg.path)):
            raise ConfigError("model.path", mcfg.path, "an existing local folder with config.json and weights")
        return os.path.expanduser(mcfg.path)
    return mcfg.path  # hub id, or a local folder given as model.path=/abs/dir


def position_limit(checkpoint: str, tokenizer) -> int | None:
    """The longest input the model takes: its position table (RoBERTa's less its padding offset, as its
    tokenizer's model_max_length says) or None when neither says."""
    try:
        positions = getattr(AutoConfig.from_pretrained(checkpoint), "max_position_embeddings", None)
    except (OSError, ValueError):
        positions = None
    limits = [n for n in (positions, getattr(tokenizer, "model_max_length", None)) if isinstance(n, int) and n < 2**30]
    return min(limits) if limits else None


def _build_tiny(mcfg: DictConfig, cache_dir: str) -> str:
    arch = OmegaConf.to_container(mcfg.architecture, resolve=True)
    digest = hashlib.sha256(json.dumps([mcfg.task, arch], sort_keys=True).encode()).hexdigest()[:12]
    target = os.path.join(cache_dir, "models", f"{mcfg.name}-{digest}")
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    arch = dict(arch)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(model_type, **arch)
    tokenizer = _word_level_tokenizer(config.vocab_size, model_type)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    # The weights of a tiny model are a function of its architecture alone.
    torch.manual_seed(0)
    auto = AutoModelForSequenceClassification if mcfg.task == "cls" else AutoModelForCausalLM
    model = auto.from_config(config)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Build beside the target and rename into place, so concurrent jobs never see half a folder.
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".building-")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another job finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _word_level_tokenizer(vocab_size: int, model_type: str):
    """A whitespace word-level tokenizer over `w0 w1 ...`, the tokens the synthetic tasks use."""
    words = [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if model_type == "bert":
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        specials = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    else:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
        specials = dict(bos_token="<s>", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", **specials)


def load_tokenizer(path: str, mcfg: DictConfig):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=mcfg.trust_remote_code)
    except OSError as err:  # loaded before the model: the same clear error as load_model's
        if mcfg.source != "hub":
            raise
        raise ConfigError("model.path", path, f"a hub id reachable from here, or a local copy: model.path=/path/to/"
                          f"folder model.source=local (the hub said: {str(err).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, mcfg: DictConfig, dtype: torch.dtype, quantization_config=None, num_labels=None,
               device: str = "cpu"):
    kwargs = dict(dtype=dtype, quantization_config=quantization_config, trust_remote_code=mcfg.trust_remote_code,
                  use_safetensors=True)
    if quantization_config is not None:
        # The current device: each process of a multi-process run has its own (lab.distributed.init).
        kwargs["device_map"] = {"": device if device == "cpu" else torch.cuda.current_device()}
    try:
        if mcfg.task == "cls":
            # A tiny model's cached head is 2-way and random: a task with more classes gets a fresh head
            # of its size rather than a size-mismatch error (any other checkpoint keeps its head's check).
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, ignore_mismatched_sizes=mcfg.source == "tiny", **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        if mcfg.source == "hub":
            raise ConfigError(
                "model.path", path,
                f"a hub id reachable from here, or a local copy: model.path=/path/to/folder model.source=local "
                f"(the hub said: {str(err).splitlines()[0]})") from None
        if os.path.isdir(path) and not any(name.endswith(".safetensors") for name in os.listdir(path)):
            # Pickled weights (.bin, .pt) can run code when loaded; the suite loads safetensors only.
            raise ConfigError("model.path", path, "a folder with .safetensors weights (pickled .bin/.pt weights "
                              "are never loaded; convert them with save_pretrained(safe_serialization=True))") from None
        raise
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    if quantization_config is None and device != "cpu":
        model.to(device)
    return model
