"""The one GPU catalog and the one headroom rule that every memory table and `lab-plan` use.

Capacity: the memory each card is sold with, in GB as the vendor states it, read as GB = 1e9 bytes.
That is a lower bound on what the card holds (an "80 GB" A100 or H100 has 80 GiB = 85.9e9 bytes;
a "141 GB" H200 about 140 GiB), so the small differences ECC and the driver reserve stay on the
safe side.

Headroom: an estimate counts the tensors a step holds (weights, gradients, optimizer state,
saved activations, buffers). On a GPU the process also needs

- a fixed allowance, CONTEXT_BYTES = 1 GiB: the CUDA context (PyTorch measured 287 MB with lazy
  module loading, PyTorch's default since 1.13, and 667 MB without: pytorch/pytorch#86509), cuBLAS
  workspaces and the kernels bitsandbytes loads;
- a proportional allowance, ALLOCATOR_SHARE = 10 % of the estimate: PyTorch's caching allocator
  rounds requests up (512 bytes; large blocks to 2 MiB, and requests under 10 MiB are carved from
  20 MiB segments), keeps freed blocks reserved, fragments, and the backward's transient tensors
  (activation gradients, a dequantized 4-bit weight, the logits' gradient) are not in the estimate.

needed = estimate + CONTEXT_BYTES + ALLOCATOR_SHARE x estimate, and a GPU fits when needed <=
capacity. Both allowances are stated assumptions, not measurements of this suite; the device
check (bench/device_check.py) measures what a GPU really reserved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.errors import ConfigError

GB = 1e9
GIB = 2**30
CONTEXT_BYTES = 1 * GIB
ALLOCATOR_SHARE = 0.10
# What several GPUs shard: one card of this name, state sharded evenly (FSDP / ZeRO-3).
SHARDED_ON = "H100-80GB"


@dataclass(frozen=True)
class Gpu:
    name: str
    gb: float  # capacity as sold, GB = 1e9 bytes
    examples: str

    @property
    def capacity(self) -> int:
        return int(self.gb * GB)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.gb:g} GB)"


# Ascending capacity; one card per size, others of that size named beside it.
CATALOG = (
    Gpu("RTX-4060", 8, "RTX 4060, RTX 3070"),
    Gpu("T4", 16, "T4, RTX 4080, V100 16GB"),
    Gpu("RTX-4090", 24, "RTX 4090, RTX 3090, A10G, L4"),
    Gpu("V100-32GB", 32, "V100 32GB"),
    Gpu("A100-40GB", 40, "A100 40GB"),
    Gpu("L40S", 48, "L40S, RTX A6000, A40"),
    Gpu("H100-80GB", 80, "H100 80GB, A100 80GB"),
    Gpu("H200", 141, "H200"),
)
RULE = (f"needed = estimate + {CONTEXT_BYTES / GIB:g} GiB (CUDA context, library workspaces) + "
        f"{ALLOCATOR_SHARE:.0%} of the estimate (caching allocator: rounding, reserved-but-free blocks, "
        "fragmentation; backward transients); a GPU fits when needed <= its capacity")
CATALOG_NOTE = ("GPU catalog (capacity as sold, GB = 1e9 bytes, a lower bound on what the card holds): "
                + ", ".join(f"{g.label}" for g in CATALOG)
                + f"; beyond one card, N x {SHARDED_ON} with the state sharded evenly (FSDP / ZeRO-3).")


def gpu(name: str) -> Gpu:
    """A catalog entry by name (case and separators ignored)."""
    wanted = _key(name)
    for entry in CATALOG:
        if _key(entry.name) == wanted:
            return entry
    raise ConfigError("plan.gpu", name, "one of " + ", ".join(g.name for g in CATALOG))


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def allowance(estimate: float) -> int:
    """The headroom the rule adds to an estimate (bytes)."""
    return int(CONTEXT_BYTES + ALLOCATOR_SHARE * estimate)


def needed(estimate: float) -> int:
    return int(estimate) + allowance(estimate)


def fits(estimate: float, card: Gpu) -> bool:
    return needed(estimate) <= card.capacity


def smallest_gpu(estimate: float) -> str:
    """The first catalog card the estimate fits with headroom, else how many sharded cards."""
    for card in CATALOG:
        if fits(estimate, card):
            return card.label
    return f"{gpus_needed(estimate)} x {gpu(SHARDED_ON).label}, sharded"


def gpus_needed(estimate: float, card: Gpu | None = None) -> int:
    """Cards of one kind that hold the estimate sharded evenly, each with its own headroom.

    Each card needs estimate / n x (1 + ALLOCATOR_SHARE) + CONTEXT_BYTES. Sharding splits weights,
    gradients and optimizer state, not each card's activations: for those this is a lower bound.
    """
    card = card or gpu(SHARDED_ON)
    usable = card.capacity - CONTEXT_BYTES
    return max(1, math.ceil(estimate * (1 + ALLOCATOR_SHARE) / usable))
