"""bf16 autocast against fp32: the paired comparison of sweeps/bf16_vs_fp32.yaml (speed and accuracy).

    python -m analysis.precision --results results --sweep multirun/bf16_vs_fp32 [--out docs/bf16_vs_fp32.md]

Per method, runs pair by seed (the same initialisation, data order and evaluated rows at both
precisions). Speed: each seed's bf16/fp32 ratio of training tokens per second (the two ran side by
side). Accuracy: the difference bf16 - fp32 in points, paired on seeds and on the evaluated rows
(analysis.stats.compare: the two-level bootstrap over the runs' per-row outputs, or over seeds alone
where a run kept none), judged by the reports' equivalence rule (analysis.rules: TOST within ±margin,
Holm across the methods) on validation accuracy, since the default precision is a choice (test
accuracy is shown beside it). The CPU default may follow only where every method is equivalent. A run
that learned nothing (health `collapsed`) or did not finish is named and left out.
"""

from __future__ import annotations

import argparse
import os

from analysis import stats
from analysis.cells import row_matrix
from analysis.collect import read_results, to_frame
from analysis.report import read_sweep
from analysis.rules import EQUIVALENCE, Rules

PRECISIONS = ("fp32", "bf16")
SPLITS = ("validation", "test")


def pairs(records: list[dict]) -> tuple[dict[str, dict[int, dict[str, dict]]], list[str]]:
    """{method: {seed: {precision: record}}} of the runs that learned, and a line per run left out."""
    by_method: dict[str, dict[int, dict[str, dict]]] = {}
    left_out = []
    for record in records:
        precision = record.get("precision") or (record.get("config") or {}).get("trainer", {}).get("precision")
        if record.get("status") != "ok" or record.get("health") == "collapsed":
            left_out.append(f"{record['run_id']}: {record.get('status')}, {record.get('health')}")
            continue
        by_method.setdefault(record["method"], {}).setdefault(int(record["seed"]), {})[precision] = record
    return by_method, left_out


def seed_rows(method: str, paired: dict[int, dict[str, dict]]) -> list[dict]:
    """One row per paired seed: each split's accuracy (points) and the training speed at each precision."""
    rows = []
    for seed, runs in paired.items():
        speed = {p: runs[p]["timing"]["train_tokens_per_second"] for p in PRECISIONS}
        rows.append({"method": method, "seed": seed,
                     **{f"{split}_accuracy_{p}": 100 * runs[p]["metrics"][f"{split}_accuracy"]
                        for split in SPLITS for p in PRECISIONS},
                     **{f"tokens_per_second_{p}": speed[p] for p in PRECISIONS},
                     "speedup": speed["bf16"] / speed["fp32"]})
    return rows


def accuracy_comparison(paired: dict[int, dict[str, dict]], rows: list[dict], split: str) -> stats.Comparison:
    """bf16 - fp32 accuracy in points over the paired seeds (`rows`: seed_rows), on the evaluated rows as
    well where both precisions kept them."""
    scores = {p: {r["seed"]: r[f"{split}_accuracy_{p}"] for r in rows} for p in PRECISIONS}
    outputs = {p: row_matrix(to_frame([runs[p] for runs in paired.values()]), split, f"{split}_accuracy")
               for p in PRECISIONS}
    return stats.compare(scores["bf16"], scores["fp32"], outputs["bf16"], outputs["fp32"])


def compare(by_method: dict[str, dict[int, dict[str, dict]]], rules: Rules = Rules()) -> dict:
    """Per method: the seeds' rows, the speed ratio, and each split's difference judged for
    equivalence, Holm-corrected across the methods."""
    paired = {method: {seed: runs for seed, runs in sorted(seeds.items()) if all(p in runs for p in PRECISIONS)}
              for method, seeds in sorted(by_method.items())}
    paired = {method: seeds for method, seeds in paired.items() if seeds}
    rows = {method: seed_rows(method, seeds) for method, seeds in paired.items()}
    judged = {split: rules.family([accuracy_comparison(seeds, rows[method], split) for method, seeds in paired.items()],
                                  EQUIVALENCE)
              for split in SPLITS}
    out = {"rules": rules, "methods": {}}
    for i, method in enumerate(paired):
        out["methods"][method] = {"rows": rows[method],
                                  "speedup": stats.mean_interval([r["speedup"] for r in rows[method]]),
                                  **{split: judged[split][i] for split in SPLITS}}
    out["equivalent"] = bool(paired) and all(m["validation"].verdict == "similar" for m in out["methods"].values())
    return out


def markdown(result: dict, left_out: list[str], source: str) -> str:
    lines = [f"# bf16 autocast vs fp32 on the CPU ({source})", "",
             "| method | seed | validation acc fp32 | bf16 | test acc fp32 | bf16 | tokens/s fp32 | bf16 | bf16 / fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in [row for m in result["methods"].values() for row in m["rows"]]:
        lines.append(f"| {r['method']} | {r['seed']} | {r['validation_accuracy_fp32']:.2f} | "
                     f"{r['validation_accuracy_bf16']:.2f} | {r['test_accuracy_fp32']:.2f} | "
                     f"{r['test_accuracy_bf16']:.2f} | {r['tokens_per_second_fp32']:.0f} | "
                     f"{r['tokens_per_second_bf16']:.0f} | {r['speedup']:.3f} |")
    rules = result["rules"]
    for method, m in result["methods"].items():
        lines += ["", f"**{method}**", "",
                  f"- speed, bf16 / fp32 training tokens per second: {m['speedup'].text(3)} ({m['speedup'].method})",
                  f"- validation accuracy, bf16 - fp32: {rules.evidence(m['validation'], (-100, 100))}",
                  f"- test accuracy, bf16 - fp32: {rules.evidence(m['test'], (-100, 100))}"]
    lines += ["", f"- rule: {rules.describe()}; Holm across the {len(result['methods'])} methods",
              "- " + ("every method equivalent on validation: bf16 autocast can be the default on a CPU with bf16 "
                      "instructions" if result["equivalent"]
                      else "equivalence not shown on validation for every method: the CPU default stays fp32")]
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
    by_method, left_out = pairs(records)
    result = compare(by_method)
    text = markdown(result, left_out, os.path.normpath(args.sweep))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return result


if __name__ == "__main__":
    main()
