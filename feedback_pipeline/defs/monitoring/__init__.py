"""The monitoring stage."""
