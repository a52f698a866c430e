"""`evaluate` metric modules shipped inside the package: `evaluate.load(<name>)` needs the hub,
`evaluate.load(<folder here>)` does not."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


# One module per metric and process: evaluate.load builds a module from its script each call (about
# 0.3 s), and a job scores two splits. compute(predictions=, references=) keeps no state between calls.
@lru_cache(maxsize=None)
def load(name: str) -> "evaluate.EvaluationModule":  # noqa: F821
    import evaluate  # seconds to import (pandas, its evaluators): a job needs it only once it evaluates

    folder = _HERE / name
    if not (folder / f"{name}.py").exists():
        available = sorted(p.name for p in _HERE.iterdir() if (p / f"{p.name}.py").exists())
        raise ValueError(f"no shipped metric {name!r}; available: {', '.join(available)}")
    return evaluate.load(str(folder))
