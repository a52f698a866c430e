"""The tables estimated from architectures alone, on the meta device (no training, no download beyond
a model's config): `python -m lab.memory.tables params|memory|published` (see __main__)."""
