"""Networks: flax modules that take constructor arguments, params in,
arrays out.
"""
