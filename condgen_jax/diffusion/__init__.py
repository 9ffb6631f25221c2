"""Diffusion: noise schedules and samplers over any model callable.
"""
