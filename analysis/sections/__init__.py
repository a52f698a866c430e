"""The report's sections, each a small module: records (a DataFrame) and cells in, a `Section` out.

    setup.py           what was run, so a reader can rerun it
    answer.py          each method against full FT with its costs, which are indistinguishable, the power line
    runs.py            runs by status and health; every collapsed run named
    results.py         the paper-style table, differences to full FT, the rank figure, the claims
    learning_rates.py  each cell's learning rates on validation, the choice and its grid edge
    curves.py          train-loss curves per cell
    memory.py          the deterministic ledger by category; RSS and tokens/s as noisy context
    pareto.py          score against adapter parameters and against ledger bytes, frontier marked
    published.py       published figures beside ours where a setting matches
"""
