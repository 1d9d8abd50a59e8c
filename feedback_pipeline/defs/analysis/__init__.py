"""The analysis stage: feedback against model metrics, and the dashboard."""
