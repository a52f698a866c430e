"""The analysis command: `python -m analysis <command> [options]`. It reads records; it never trains.

    report        a results store or one sweep -> report.md + report.html (+ figures, CSVs)
    collect       what a results store holds (records by status, folders without a record)

The tables estimated from architectures (parameters, memory, published memory) are
`python -m lab.memory.tables params|memory|published`: they build models, which analysis never does.
"""

from __future__ import annotations

import sys

from analysis import collect, report
from lab.errors import ConfigError

COMMANDS = {"report": report.main, "collect": collect.main}
# The verbs that moved to lab.memory.tables: a pointer, not an alias (analysis imports no torch).
MOVED = {"params-table": "params", "memory-table": "memory", "published-memory": "published"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MOVED:
        sys.exit(f"`python -m analysis {argv[0]}` is now `python -m lab.memory.tables {MOVED[argv[0]]}`")
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__.strip() + ("" if not argv or argv[0] in ("-h", "--help") else f"\n\nunknown command {argv[0]!r}"))
    try:
        COMMANDS[argv[0]](argv[1:])
    except ConfigError as err:
        # A user's mistake (a missing folder, no records, --out naming a file): one line, exit 2 as
        # lab-train's invalid config (README, "Exit codes").
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
