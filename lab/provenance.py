"""Where and with what a run ran: package versions, the commit, the device, threads, host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata

import torch

PACKAGES = ("lab", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "evaluate",
            "hydra-core", "omegaconf", "wandb")


def _git(*args: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: str) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "versions": {package: _version(package) for package in PACKAGES},
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
