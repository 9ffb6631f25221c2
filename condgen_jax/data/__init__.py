"""Datasets, their conditions and image grids.
"""
