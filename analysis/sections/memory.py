"""Memory from the deterministic ledger (exact bytes by category, the same for every seed and
learning rate of a cell); the process's RSS and tokens/s only as noisy context, median [min-max]."""

from __future__ import annotations

import pandas as pd

from analysis import figures
from analysis.cells import Cell
from analysis.document import Section
from lab.memory import gpus

MB = 1e6
CATEGORIES = ("Weights", "Gradients", "Optimizer state", "Saved activations", "Buffers")
LEDGER_NOTE = ("Bytes counted tensor by tensor on one training step at the run's longest batch (its batch_size "
               "longest training rows; lab/memory/ledger.py): weights by "
               "storage (4-bit codes and constants for QLoRA), gradients, the optimizer's state, the activations "
               "saved for backward, buffers. MB = 1e6 bytes. The ledger does not depend on the seed or the learning "
               "rate: one row per cell. It is the ledger of the device the runs used; for a GPU, `lab-plan` gives "
               f"the same categories on CUDA and the smallest card. {gpus.CATALOG_NOTE} Headroom rule: {gpus.RULE}.")
NOISE_NOTE = ("Measured by the process, so noisy here: the peak resident set (RSS) above the pre-model baseline "
              "also holds the allocator's cache and the checkpoint pages loading read, and in a process that ran "
              "earlier jobs it understates (freed pages are reused): compare it only between runs that each had a "
              "process of their own. Tokens/s depends on what else the machine ran (load average beside it). "
              "Median [min-max] over the cell's runs. MB = 1e6 bytes.")


def _sum(runs: pd.DataFrame, prefix: str) -> pd.Series:
    columns = [c for c in runs if c.startswith(prefix)]
    return runs[columns].sum(axis=1, min_count=1) if columns else pd.Series(float("nan"), index=runs.index)


def ledger_row(cell: Cell) -> dict | None:
    runs = cell.runs[cell.runs["status"] == "ok"]
    if "memory.ledger_total" not in runs or runs["memory.ledger_total"].isna().all():
        return None
    values = {"Weights": _sum(runs, "memory.weights."), "Gradients": runs.get("memory.gradients"),
              "Optimizer state": _sum(runs, "memory.optimizer_state."),
              "Saved activations": runs.get("memory.activations"), "Buffers": runs.get("memory.buffers"),
              "Ledger total": runs["memory.ledger_total"]}
    row = {"Cell": cell.label}
    for name, series in values.items():
        series = pd.to_numeric(series, errors="coerce").dropna()
        row[name] = series.median() / MB if len(series) else None
        if len(series.unique()) > 1:
            row[name + " varies"] = True
    return row


def ledger_table(cells: list[Cell]) -> pd.DataFrame:
    rows = [r for r in (ledger_row(c) for c in cells) if r]
    return pd.DataFrame(rows).round(3) if rows else pd.DataFrame()


def spread(series: pd.Series, scale: float = 1.0, digits: int = 0) -> str:
    values = pd.to_numeric(series, errors="coerce").dropna() / scale
    if not len(values):
        return "–"
    return f"{values.median():.{digits}f} [{values.min():.{digits}f}–{values.max():.{digits}f}] (n={len(values)})"


def noise_table(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        runs = cell.runs[cell.runs["status"] == "ok"]
        load = runs.get("timing.loadavg_start")
        rows.append({
            "Cell": cell.label,
            "Peak RSS above baseline, MB": spread(runs.get("memory.peak.peak_rss_above_baseline", pd.Series()), MB),
            "Tokens/s": spread(runs.get("timing.train_tokens_per_second", pd.Series())),
            "Load average at start (1 min)": spread(load.map(lambda v: v[0] if isinstance(v, list) else None), 1, 1)
            if load is not None else "–",
            "Runs after an earlier job in their process": int((runs.get("memory.earlier_jobs_in_process",
                                                                         pd.Series(dtype=float)) > 0).sum()),
        })
    return pd.DataFrame(rows)


def section(cells: list[Cell], folder: str) -> Section:
    out = Section("Memory and speed")
    ledger = ledger_table(cells)
    if len(ledger):
        shown = ledger[[c for c in ledger if not c.endswith(" varies")]]
        out.table(shown, LEDGER_NOTE)
        out.figure(figures.memory_plot(shown, [c for c in CATEGORIES if c in shown], folder),
                   "The ledger by category per cell (MB = 1e6 bytes).")
    else:
        out.text("No run recorded a memory ledger.")
    out.table(noise_table(cells), NOISE_NOTE)
    return out
