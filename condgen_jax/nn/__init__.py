"""Layers: stock flax layers, conditioning layers, the injected XLA:CPU
kernels, differentiable augmentation.
"""
