"""A GGUF checkpoint, converted once into a plain Hugging Face folder that can be trained and saved.

transformers reads GGUF files (with the `gguf` package) but keeps the model marked as quantized
with a GGUF quantizer, so it can be neither fine-tuned fully nor saved. We load it once, copy the
dequantized weights into a model built from the same config without the quantization entry,
check that the copy computes exactly what the GGUF model computes, and save it with the GGUF's own
tokenizer (chat template included) under <cache>/models/<name>-<sha256 of the file>.

The weights are the GGUF's dequantized values, stored as float32: for smollm2-135m that is
SmolLM2-135M-Instruct after Q4_1 quantization (4-bit blocks with a per-block scale and offset),
not the original bf16 release.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.errors import ConfigError
from lab.paths import SETUP, file_sha256, package_dir


def gguf_location(mcfg: DictConfig) -> tuple[str, str]:
    """(folder, file name) of the GGUF file: inside `model.package`, or in the folder `model.path`."""
    if not mcfg.gguf_file:
        raise ConfigError("model.gguf_file", mcfg.gguf_file, "the name of a .gguf file")
    folder = package_dir(mcfg.package, "model.package") if mcfg.package else os.path.expanduser(mcfg.path or "")
    if not os.path.isfile(os.path.join(folder, mcfg.gguf_file)):
        where = f"package {mcfg.package} ({folder})" if mcfg.package else f"model.path={mcfg.path!r}"
        raise ConfigError("model.gguf_file", mcfg.gguf_file,
                          f"a .gguf file in {where}; run `{SETUP}` to reinstall the package that ships it")
    return folder, mcfg.gguf_file


def target_path(mcfg: DictConfig, cache_dir: str) -> str:
    folder, name = gguf_location(mcfg)
    digest = file_sha256(os.path.join(folder, name))
    return os.path.join(cache_dir, "models", f"{mcfg.name}-{digest[:12]}")


def converted_path(mcfg: DictConfig, cache_dir: str) -> str:
    if mcfg.task != "lm":
        raise ConfigError("model.task", mcfg.task, "lm: a GGUF file holds a causal language model")
    target = target_path(mcfg, cache_dir)
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    folder, name = gguf_location(mcfg)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Build beside the target and rename into place, so concurrent jobs never see half a folder.
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".building-")
    try:
        _convert(folder, name, staging)
        os.rename(staging, target)
    except OSError:
        if not os.path.exists(os.path.join(target, "config.json")):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # another job finished first, or the build failed
    return target


def _convert(folder: str, name: str, out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)

    with open(os.path.join(out, "config.json")) as f:
        if "quantization_config" in json.load(f):
            raise RuntimeError(f"converted {name} still has a quantization_config")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    if getattr(reloaded, "hf_quantizer", None) is not None or any(
            not p.dtype.is_floating_point for p in reloaded.parameters()):
        raise RuntimeError(f"converted {name} did not load as a plain floating-point model")
    probe = tokenizer("Question: What is a GGUF file?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        gap = (reloaded(**probe).logits - gguf_model(**probe).logits).abs().max().item()
    if gap > 1e-4:
        raise RuntimeError(f"converted {name} computes different logits from the GGUF model (max gap {gap:.2e})")
