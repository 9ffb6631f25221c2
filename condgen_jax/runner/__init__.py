"""The training loop shared by every family.
"""
