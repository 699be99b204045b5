"""The bottom layer: types, errors, registries, checkpoints, atomic writes, statistics.
Imports nothing else of dnas."""
