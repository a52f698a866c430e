"""The lab suite's Hydra plugins: a sweeper over a union of grids, and the `sweeps/` search path.

They live under the `hydra_plugins` namespace because Hydra only instantiates plugins from there.
"""
