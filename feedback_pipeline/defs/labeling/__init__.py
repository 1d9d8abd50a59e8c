"""The labeling stage."""
