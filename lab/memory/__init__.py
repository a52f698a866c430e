"""Memory of a run, in bytes: measured, counted tensor by tensor, and estimated from the architecture.

    measure.py      weights by role and storage, and the device's peak (CUDA pools, or the CPU's RSS)
    ledger.py       the measured ledger: buffers, gradients, optimizer state, saved activations
    estimate.py     the same categories from the architecture alone, on the meta device
    activations.py  the per-family formulas for the saved activations
    compare.py      the estimate beside a run's ledger
    preflight.py    the estimated peak against the device's free memory, before a run loads anything

GB = 1e9 bytes and GiB = 2**30 bytes wherever a table converts, and it says which.
"""
