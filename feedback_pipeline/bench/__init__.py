"""Benchmarks of the pipeline's library code on realistic, simulated data."""
