"""The lab suite's Hydra plugin: a sweeper over a union of grids (the sweep configs are in `sweeps/`).

They live under the `hydra_plugins` namespace because Hydra only instantiates plugins from there.
"""
