"""The one entry point: every definition under ``defs/``."""

import functools
import os
from pathlib import Path

import dagster as dg

from feedback_pipeline.lib import memory

# The prefix of the environment variables the definitions read as they are built.
ENV_PREFIX = "FEEDBACK_PIPELINE_"


@dg.definitions
def defs() -> dg.Definitions:
    """Loads assets, checks, jobs, schedules, sensors and resources from the defs folder.

    Built once per process for each value of the project's environment variables: a run loads
    its job's definitions four times before its first step (0.3 s each, most of it Dagster
    describing its component types), and the modules they come from are imported only once
    anyway.
    """
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    return _load(environment)


@functools.lru_cache(maxsize=8)
def _load(environment: tuple[tuple[str, str], ...]) -> dg.Definitions:
    """The definitions, loaded without the cyclic collector.

    The first load imports pandas, polars, scikit-learn and every module of the project: the
    full collections the growth in objects would set off walk them all again and again (six of
    them took 0.7 s of a night's start), and none of them is garbage.
    """
    with memory.collector_off():
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
