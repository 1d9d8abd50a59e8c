"""Feedback pipeline: joins production feedback to predictions and tracks real model quality."""
