"""The README's tooling: the results report, plots and the benchmark.
"""
