"""Realistic synthetic traffic for the demo and the tests."""
