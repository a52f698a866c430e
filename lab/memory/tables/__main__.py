"""The estimated tables: `python -m lab.memory.tables <command> [options]`. They build models on the
meta device from their architectures; they read no records (python -m analysis reads those).

    params     trainable parameters by rank and model size          -> reports/params_table.md, .csv
    memory     training memory by method for the large configs      -> reports/memory_table.md
    published  published memory measurements (torchtune, LitGPT, PEFT, QLoRA) beside the estimates
                                                                     -> reports/published_memory.md
"""

from __future__ import annotations

import sys

from lab.memory.tables import memory, params, published

COMMANDS = {"params": params.main, "memory": memory.main, "published": published.main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__.strip() + ("" if not argv or argv[0] in ("-h", "--help") else f"\n\nunknown command {argv[0]!r}"))
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
