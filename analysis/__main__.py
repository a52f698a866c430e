"""The analysis command: `python -m analysis <command> [options]`. It reads records; it never trains.

    report        a results store or one sweep -> report.md + report.html (+ figures, CSVs)
    params-table  trainable parameters by rank and model size, from architectures (meta device)
    memory-table  training memory by method for the large configs, from architectures (meta device)
    published-memory  published memory measurements (torchtune, LitGPT, PEFT, QLoRA) beside the estimates
    collect       what a results store holds (records by status, folders without a record)
"""

from __future__ import annotations

import sys

from analysis import collect, memory_table, params_table, published_memory, report

COMMANDS = {"report": report.main, "params-table": params_table.main, "memory-table": memory_table.main,
            "published-memory": published_memory.main, "collect": collect.main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__.strip() + ("" if not argv or argv[0] in ("-h", "--help") else f"\n\nunknown command {argv[0]!r}"))
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
