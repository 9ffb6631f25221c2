"""The README's tooling: the results report, plots, the benchmark and the
export of a trained sampler (`jax.export`, docs/accelerators.md).
"""
