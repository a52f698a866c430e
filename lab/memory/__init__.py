"""Memory of a run, in bytes: measured, counted tensor by tensor, and estimated from the architecture.

Lower modules first (each imports only those below it; pyproject.toml's contracts hold it):

    gpus.py         the GPU catalog and the one headroom rule (plain Python)
    labels.py       the names of the categories and budget rows, and the rules' text (plain Python)
    measure.py      weights by role and storage, and the device's peak (CUDA pools, or the CPU's RSS)
    ledger.py       the measured ledger: buffers, gradients, optimizer state, saved activations
    activations.py  the per-family formulas for the saved activations
    estimate.py     the same categories from the architecture alone, on the meta device
    anymodel.py     any Hugging Face model's config as a model node (for lab-plan --config)
    budget.py       an estimate as a GPU budget: the peak for a config, batch and length, the largest batch
    compare.py      the estimate beside a run's ledger
    preflight.py    the estimated peak against the device's free memory, before a run loads anything

GB = 1e9 bytes and GiB = 2**30 bytes wherever a table converts, and it says which.
"""
