"""The seed document's "Number of Trainable Parameters" table, counted exactly.

    python -m lab.memory.tables params [--out reports]

For Llama-2 7B / 13B / 70B and Falcon-180B (conf/model/*.yaml, architectures from their public
config.json) x LoRA ranks 1, 2, 8, 16, 512, 1024 x target sets qv, attn, all-linear, the model
is built on the meta device (no weights) and LoRA applied by the suite's own `apply_method`;
trainable and total are peft's counts, as a run records them. Beside them: the seed's value, the
seed's apparent rule 2*r*sqrt(N) for the nominal size N (lab/memory/tables/reference/seed_tables.yaml) and
our count's ratio to that rule. Writes params_table.md and params_table.csv to --out.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time

import yaml

from lab.memory.estimate import config_for, count_params
from lab.memory.tables.common import REFERENCE

SEED_TABLES = os.path.join(REFERENCE, "seed_tables.yaml")
MODELS = {"llama2-7b": ("7B", 7e9), "llama2-13b": ("13B", 13e9), "llama2-70b": ("70B", 70e9),
          "falcon-180b": ("180B", 180e9)}
TARGET_SETS = ("qv", "attn", "all-linear")
RANKS = (1, 2, 8, 16, 512, 1024)
COLUMNS = ["model", "targets", "rank", "trainable_params", "total_params", "seed_value",
           "seed_rule_2r_sqrtN", "trainable_over_rule"]
TARGET_MEANING = {
    "qv": "Llama: q_proj, v_proj. Falcon: the fused query_key_value (q, k and v together).",
    "attn": "Llama: q_proj, k_proj, v_proj, o_proj. Falcon: query_key_value + attention output dense.",
    "all-linear": "attn + the MLP (Llama: gate_proj, up_proj, down_proj; Falcon: dense_h_to_4h, dense_4h_to_h).",
}


def seed_cells(path: str = SEED_TABLES) -> dict[tuple[int, str], str]:
    with open(path) as f:
        table = yaml.safe_load(f)["lora_trainable_params_approx"]
    return {(int(rank), column): value for rank, values in table["rows"].items()
            for column, value in zip(table["columns"], values)}


def parse_seed(value: str) -> float:
    """'167k' -> 167e3, '2M' -> 2e6 (the seed's own display units)."""
    scale = {"k": 1e3, "M": 1e6, "B": 1e9}[value[-1]]
    return float(value[:-1]) * scale


def seed_display(number: float) -> str:
    """A number as the seed writes it: whole thousands below a million, else whole millions."""
    return f"{round(number / 1e3)}k" if number < 1e6 else f"{round(number / 1e6)}M"


def rule(rank: int, nominal: float) -> float:
    """LoRA on one sqrt(N) x sqrt(N) matrix: r * (sqrt(N) + sqrt(N)) parameters."""
    return 2 * rank * math.sqrt(nominal)


def count_rows() -> list[dict]:
    cells = seed_cells()
    rows = []
    for model, (column, nominal) in MODELS.items():
        for targets in TARGET_SETS:
            for rank in RANKS:
                counts = count_params(config_for(model, "lora", rank, targets))
                expected = rule(rank, nominal)
                rows.append({"model": model, "targets": targets, "rank": rank,
                             "trainable_params": counts["trainable"], "total_params": counts["total"],
                             "seed_value": cells[(rank, column)], "seed_rule_2r_sqrtN": round(expected),
                             "trainable_over_rule": round(counts["trainable"] / expected, 4)})
    return rows


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def markdown(rows: list[dict]) -> str:
    cells = seed_cells()
    lines = ["# Trainable parameters of LoRA: exact counts beside the seed document's table", "",
             "Counted with peft (the suite's `apply_method` on a meta-device build of each public "
             "architecture; conf/model/*.yaml name the config.json). Counts are parameters (not bytes); "
             "k = 1e3, M = 1e6, B = 1e9. Cells: **ours** (seed's value).", ""]
    for targets in TARGET_SETS:
        lines += [f"## Targets `{targets}`", "", TARGET_MEANING[targets], "",
                  "| rank | " + " | ".join(MODELS) + " |", "|---" * (len(MODELS) + 1) + "|"]
        for rank in RANKS:
            row = [r for r in rows if r["targets"] == targets and r["rank"] == rank]
            by_model = {r["model"]: r for r in row}
            lines.append(f"| {rank} | " + " | ".join(
                f"**{by_model[m]['trainable_params']:,}** ({by_model[m]['seed_value']})" for m in MODELS) + " |")
        lines.append("")
    totals = {r["model"]: r["total_params"] - r["trainable_params"] for r in rows}
    lines += ["Base parameters (total minus adapters): " + ", ".join(
        f"{m} {n:,}" for m, n in totals.items()) + ".", ""]
    lines += ["## The seed's rule", "",
              "The seed's cells match 2·r·√N for the nominal size N (7e9, 13e9, 70e9, 180e9): LoRA on a "
              "single √N × √N matrix, not on any real model's layers.", "",
              "| rank | model | seed | 2·r·√N | as the seed writes it | equal |", "|---|---|---|---|---|---|"]
    matches = 0
    for rank in RANKS:
        for model, (column, nominal) in MODELS.items():
            value = rule(rank, nominal)
            seed = cells[(rank, column)]
            equal = seed_display(value) == seed
            matches += equal
            off = (parse_seed(seed) / value - 1) * 100
            lines.append(f"| {rank} | {model} | {seed} | {value:,.0f} | {seed_display(value)} | "
                         + ("yes" if equal else f"no (seed {off:+.2f}%)") + " |")
    lines += ["", f"{matches} of {len(cells)} seed cells equal the rule as the seed rounds (whole k below 1M, "
              "whole M above). 13B r=1 '288k' is 26% above the rule's 228k, a digit typo.", "",
              "## Our count over the rule", "",
              "Both counts are linear in r, so the ratio is the same at every rank (1 to 1024; the CSV "
              "has it per row).", "",
              "| targets | " + " | ".join(MODELS) + " |", "|---" + "|---" * len(MODELS) + "|"]
    for targets in TARGET_SETS:
        ratios = {m: {r["trainable_over_rule"] for r in rows if r["targets"] == targets and r["model"] == m}
                  for m in MODELS}
        lines.append(f"| {targets} | " + " | ".join(
            "/".join(f"{v:.2f}x" for v in sorted(ratios[m])) for m in MODELS) + " |")
    qv8 = next(r for r in rows if r["model"] == "llama2-7b" and r["targets"] == "qv" and r["rank"] == 8)
    lines += ["", "For example Llama-2 7B "
              f"with q_proj and v_proj at r=8 trains {qv8['trainable_params']:,} parameters "
              f"({_human(qv8['trainable_params'])}); the seed says {qv8['seed_value']}.", ""]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write(rows: list[dict], out_dir: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    csv_path = write_csv(rows, os.path.join(out_dir, "params_table.csv"))
    md_path = os.path.join(out_dir, "params_table.md")
    with open(md_path, "w") as f:
        f.write(markdown(rows))
    return md_path, csv_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.memory.tables params", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)
    started = time.time()
    rows = count_rows()
    md_path, csv_path = write(rows, args.out)
    print(f"{len(rows)} rows in {time.time() - started:.1f} s: {md_path}, {csv_path}")

