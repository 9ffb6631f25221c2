"""Datasets (in memory, or streamed from TFDS by `streaming`), their
conditions and image grids.
"""
