"""Metrics, the reference classifiers, sampling a run and evaluating it.
"""
