"""bf16 autocast against fp32: the paired comparison of sweeps/bf16_vs_fp32.yaml (speed and accuracy).

    python -m analysis.precision --results results --sweep multirun/bf16_vs_fp32 [--out docs/bf16_vs_fp32.md]

Runs pair by seed (the same initialisation, data order and evaluated rows at both precisions). Speed:
each seed's bf16/fp32 ratio of training tokens per second (the two ran side by side). Accuracy: the
paired difference bf16 - fp32 in points over seeds (analysis.stats.seed_comparison), judged by the
reports' equivalence rule (analysis.rules: TOST within ±margin, one family of one comparison) on
validation accuracy, since the default precision is a choice (test accuracy is shown beside it).
A run that learned nothing (health `collapsed`) or did not finish is named and left out of both.
"""

from __future__ import annotations

import argparse
import os

from analysis import stats
from analysis.collect import read_results
from analysis.report import read_sweep
from analysis.rules import EQUIVALENCE, Rules

PRECISIONS = ("fp32", "bf16")


def pairs(records: list[dict]) -> tuple[dict[int, dict[str, dict]], list[str]]:
    """{seed: {precision: record}} of the runs that learned, and a line per run left out."""
    by_seed: dict[int, dict[str, dict]] = {}
    left_out = []
    for record in records:
        precision = record.get("precision") or (record.get("config") or {}).get("trainer", {}).get("precision")
        if record.get("status") != "ok" or record.get("health") == "collapsed":
            left_out.append(f"{record['run_id']}: {record.get('status')}, {record.get('health')}")
            continue
        by_seed.setdefault(int(record["seed"]), {})[precision] = record
    return by_seed, left_out


def compare(by_seed: dict[int, dict[str, dict]], rules: Rules = Rules()) -> dict:
    paired = {seed: runs for seed, runs in sorted(by_seed.items()) if all(p in runs for p in PRECISIONS)}
    rows = []
    for seed, runs in paired.items():
        fp32, bf16 = runs["fp32"], runs["bf16"]
        rows.append({"seed": seed,
                     **{f"{split}_accuracy_{p}": 100 * runs[p]["metrics"][f"{split}_accuracy"]
                        for split in ("validation", "test") for p in PRECISIONS},
                     "tokens_per_second_fp32": fp32["timing"]["train_tokens_per_second"],
                     "tokens_per_second_bf16": bf16["timing"]["train_tokens_per_second"],
                     "speedup": bf16["timing"]["train_tokens_per_second"] / fp32["timing"]["train_tokens_per_second"]})
    out = {"rows": rows, "rules": rules}
    for split in ("validation", "test"):
        comparison = stats.seed_comparison({r["seed"]: r[f"{split}_accuracy_bf16"] for r in rows},
                                           {r["seed"]: r[f"{split}_accuracy_fp32"] for r in rows})
        out[split] = rules.family([comparison], EQUIVALENCE)[0]
    out["speedup"] = stats.mean_interval([r["speedup"] for r in rows])
    out["equivalent"] = out["validation"].verdict == "similar"
    return out


def markdown(result: dict, left_out: list[str], source: str) -> str:
    lines = [f"# bf16 autocast vs fp32 on the CPU ({source})", "",
             "| seed | validation acc fp32 | bf16 | test acc fp32 | bf16 | tokens/s fp32 | bf16 | bf16 / fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | {r['validation_accuracy_fp32']:.2f} | {r['validation_accuracy_bf16']:.2f} | "
                     f"{r['test_accuracy_fp32']:.2f} | {r['test_accuracy_bf16']:.2f} | "
                     f"{r['tokens_per_second_fp32']:.0f} | {r['tokens_per_second_bf16']:.0f} | {r['speedup']:.3f} |")
    rules = result["rules"]
    lines += ["",
              f"- speed, bf16 / fp32 training tokens per second: {result['speedup'].text(3)} ({result['speedup'].method})",
              f"- validation accuracy, bf16 - fp32: {rules.evidence(result['validation'])}",
              f"- test accuracy, bf16 - fp32: {rules.evidence(result['test'])}",
              f"- rule: {rules.describe()}",
              "- " + ("equivalent on validation: bf16 may be the CPU default" if result["equivalent"]
                      else "equivalence not shown on validation: the CPU default stays fp32")]
    if left_out:
        lines += ["", "Left out (did not finish or learned nothing):", *[f"- {line}" for line in left_out]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m analysis.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--sweep", default="multirun/bf16_vs_fp32", help="the sweep folder: only its runs")
    parser.add_argument("--out", help="also write the Markdown here")
    args = parser.parse_args(argv)
    ids = {job["run_id"] for job in read_sweep(args.sweep)["jobs"] if job.get("run_id")}
    records = [r for r in read_results(args.results)[0] if r["run_id"] in ids]
    by_seed, left_out = pairs(records)
    result = compare(by_seed)
    text = markdown(result, left_out, os.path.normpath(args.sweep))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return result


if __name__ == "__main__":
    main()
