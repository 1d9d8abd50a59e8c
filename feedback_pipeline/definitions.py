"""The one entry point: every definition under ``defs/``."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """Loads assets, checks, jobs, schedules, sensors and resources from the defs folder."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
