"""A model config node for any Hugging Face architecture: from a local config.json, a folder holding
one, or a hub id. Only the architecture is read; the estimator builds it on the meta device.

The node is what a `conf/model/*.yaml` file would say: the config.json's fields as
`architecture`, the task (`cls` for BERT-like encoders, else `lm`), and LoRA target sets found on
the built model's linear layers: `all-linear` (every linear layer but the output head), `attn`
(the attention projections) and `qv` (query and value), where the model has them.
"""

from __future__ import annotations

import json
import os
import re
import socket
from urllib.parse import urlparse

import torch
from huggingface_hub import constants
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from lab.config import architecture_sizes
from lab.errors import ConfigError
from lab.memory.estimate import quiet_transformers

KEY = "plan.config"
# Fields of a config.json that describe the file, not the architecture.
NOT_ARCHITECTURE = ("architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "auto_map")
ENCODERS = ("bert", "roberta", "xlm-roberta")
# "dense" is not an attention name: BERT reuses it for the MLP too.
QUERY, KEY_PROJ, VALUE, OUT = ("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("o_proj",)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # name or org/name, as the hub spells them
HEADS = ("lm_head", "classifier", "score", "out_proj", "pooler")
# What an estimate cannot take from library defaults: a config.json without one would be planned as the
# library's default model of that type (LLaMA's is 6.7 B parameters), silently.
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def read_architecture(source: str, cache_dir: str | None = None) -> tuple[str, dict]:
    """(name, config.json fields) from a file, a folder or a hub id; ConfigError if none answers."""
    path = os.path.join(source, "config.json") if os.path.isdir(source) else source
    if os.path.isfile(path):
        try:
            with open(path) as f:
                fields = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(KEY, source, f"a readable config.json ({type(err).__name__}: {err})") from None
        if not isinstance(fields, dict):
            raise ConfigError(KEY, source, f"a config.json holding one JSON object (this holds a {type(fields).__name__})")
        folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
        return folder or "config", fields
    if not HUB_ID.fullmatch(source) or source.endswith(".json"):
        raise ConfigError(KEY, source, "an existing config.json, a folder holding one, or a hub id (org/name)")
    unreachable = hub_unreachable()
    try:
        # Unreachable: only the local cache can answer, at once (the hub client would retry for ~30 s).
        config = AutoConfig.from_pretrained(source, cache_dir=cache_dir, local_files_only=unreachable is not None)
    except Exception as err:  # offline, unknown id, gated: all one answer for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = f"the hub is not reachable from here ({unreachable}) and the id is not in the local cache" \
            if unreachable else f"it did not: {first[:160]}"
        raise ConfigError(KEY, source, f"a local config.json or folder, or a hub id the Hugging Face hub answers "
                                       f"for ({why})") from None
    return source.replace("/", "--"), config.to_dict()


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be asked (offline mode, no connection), or None when it can."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"{url.hostname}: {err.strerror or err}"
    return None


def model_node(source: str, cache_dir: str | None = None) -> dict:
    """The `model` config node for `source` (see the module docstring)."""
    name, fields = read_architecture(source, cache_dir)
    if "model_type" not in fields:
        raise ConfigError(KEY, source, "a config.json with a model_type (transformers' architecture name)")
    if not isinstance(fields.get("model_type"), str):
        raise ConfigError(KEY, source, "a config.json whose model_type is a name (e.g. llama)")
    arch = {k: v for k, v in fields.items() if k not in NOT_ARCHITECTURE and not k.startswith("_")}
    task = "cls" if arch["model_type"] in ENCODERS else "lm"
    check_supported(arch["model_type"], task)
    sizes = architecture_sizes(arch, KEY)  # before anything is built: 1e6 layers answer at once
    missing = [key for key in REQUIRED if key not in sizes]
    if missing:
        raise ConfigError(KEY, source, f"a config.json that gives the sizes an estimate needs; it lacks "
                                       f"{', '.join(missing)}")
    if "quantization_config" in arch:
        raise ConfigError(KEY, source, "an unquantized checkpoint's config (this one carries a "
                                       "quantization_config; QLoRA quantizes with method=qlora)")
    names = linear_names(arch, task)
    return {"name": re.sub(r"[^A-Za-z0-9._-]+", "-", name), "task": task, "source": "local",
            "path": os.path.abspath(source) if os.path.exists(source) else source,
            "architecture": arch, "config_source": f"{source} (config.json)",
            "max_length": int(arch.get("max_position_embeddings") or 512), "head_modules": [],
            "target_sets": target_sets(names), "trust_remote_code": False}


def check_supported(model_type: str, task: str) -> None:
    """A text model lab can train: an encoder with a classification head or a causal LM (`vit`, `whisper`,
    ... are named as not supported, not a traceback from transformers)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    known = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES if task == "cls" else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if model_type not in known:
        raise ConfigError(KEY, model_type, "a text model lab can train: an encoder (" + ", ".join(ENCODERS) + ") or "
                          "a causal language model transformers knows (llama, mistral, qwen2, gpt2, ...); "
                          f"{model_type!r} is not one")


def linear_names(arch: dict, task: str) -> list[str]:
    """The distinct last names of the model's linear layers, output heads excluded (meta device)."""
    fields = dict(arch)
    model_type = fields.pop("model_type")
    try:
        with quiet_transformers():
            config = AutoConfig.for_model(model_type, **fields)
    except ValueError as err:
        raise ConfigError(KEY, model_type, f"a model_type this transformers knows ({err})") from None
    except Exception as err:  # a field of the wrong kind for this architecture: the user's file, one line
        raise ConfigError(KEY, model_type, f"fields transformers accepts for {model_type} "
                                           f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    auto = AutoModelForSequenceClassification if task == "cls" else AutoModelForCausalLM
    try:
        with quiet_transformers(), torch.device("meta"):
            model = auto.from_config(config)
    except Exception as err:  # sizes each in bounds that do not fit together (transformers says which)
        raise ConfigError(KEY, model_type, f"an architecture transformers can build ({type(err).__name__}: "
                                           f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None
    names = []
    for full, module in model.named_modules():
        last = full.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and last not in HEADS and last not in names:
            names.append(last)
    return names


def target_sets(names: list[str]) -> dict[str, list[str]]:
    sets = {"all-linear": list(names)} if names else {}  # GPT-2's projections are Conv1D, not Linear
    attn = [n for group in (QUERY, KEY_PROJ, VALUE, OUT) for n in group if n in names][:4]
    if attn:
        sets["attn"] = attn
    qv = [n for group in (QUERY, VALUE) for n in group if n in names]
    if len(qv) == 2:
        sets["qv"] = qv
    return sets
