"""A night's steps leave nothing of their days in memory once their outputs are written."""

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np

from feedback_pipeline.lib import memory
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

# Run in a fresh interpreter: what Dagster compiles on the first use of a class in a process
# (and what that keeps) happens there as it does in a run worker, whatever ran in this one.
_INGEST_AND_COUNT = """
import gc, json, sys
import dagster as dg
import pandas as pd
from feedback_pipeline.bench import nightly

with dg.DagsterInstance.get() as instance:
    result = dg.execute_job(
        dg.reconstructable(nightly.daily_job),
        instance=instance,
        op_selection=["feedback_events", "inference_log"],
        tags={"dagster/partition": sys.argv[1]},
    )
    assert result.success
del result
gc.collect()
sizes = [len(o) for o in gc.get_objects() if isinstance(o, pd.DataFrame)]
print(json.dumps({"frames_of_100_rows_or_more": sum(n >= 100 for n in sizes)}))
"""


def _in_a_fresh_interpreter(script: str, settings: Settings, data_dir: Path) -> object:
    """What ``script`` prints last, as JSON, run on a simulated day in a fresh interpreter."""
    config = small_config(settings, days=1)
    simulate_landing(settings, config)
    (data_dir / "dagster_home").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, config.day(0).isoformat()],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ingested_days_are_not_kept_in_memory_after_their_steps(
    settings: Settings, data_dir: Path
) -> None:
    counts = _in_a_fresh_interpreter(_INGEST_AND_COUNT, settings, data_dir)

    assert counts == {"frames_of_100_rows_or_more": 0}


# The outputs each step wrote, watched through weak references: at every step's first read of
# its inputs, no earlier step's output may still be in memory. Python's automatic collection is
# off, so only the pipeline's own collection at step boundaries can free a reference cycle.
_OUTPUTS_ALIVE_AT_READS = """
import gc, json, sys, weakref
import dagster as dg
from feedback_pipeline.bench import nightly
from feedback_pipeline.defs.resources import DailyParquetIOManager

gc.disable()
written, alive_at_reads = [], []
dump, load = DailyParquetIOManager.dump_to_path, DailyParquetIOManager.load_input

def dump_to_path(self, context, obj, path):
    dump(self, context, obj, path)
    written.append((context.asset_key.to_user_string(), weakref.ref(obj)))

def load_input(self, context):
    value = load(self, context)
    alive = [name for name, ref in written if ref() is not None]
    alive_at_reads.append([context.asset_key.to_user_string(), alive])
    written.clear()  # the outputs of this step's own inputs' steps were just checked
    return value

DailyParquetIOManager.dump_to_path, DailyParquetIOManager.load_input = dump_to_path, load_input
with dg.DagsterInstance.get() as instance:
    for _ in range(2):  # the second night finds the assets' keys in the event storage
        result = dg.execute_job(
            dg.reconstructable(nightly.daily_job),
            instance=instance,
            asset_selection=[
                dg.AssetKey(k) for k in ("feedback_events", "inference_log", "attributed_feedback")
            ],
            tags={"dagster/partition": sys.argv[1]},
        )
        assert result.success
        del result
print(json.dumps(alive_at_reads))
"""


def test_no_step_s_output_outlives_its_step_in_a_reference_cycle(
    settings: Settings, data_dir: Path
) -> None:
    reads = _in_a_fresh_interpreter(_OUTPUTS_ALIVE_AT_READS, settings, data_dir)

    assert isinstance(reads, list)
    assert [name for name, _ in reads].count("feedback_events") == 2  # one read per night
    assert all(alive == [] for _, alive in reads), reads


def test_a_cycle_is_freed_at_a_step_boundary_and_what_the_run_began_with_is_left_out() -> None:
    class Node:
        pass

    enabled = gc.isenabled()
    gc.disable()
    memory.settle()
    try:
        assert gc.get_freeze_count() > 0  # the objects the run began with, out of sight
        cycle, data = Node(), np.ones(1000)
        cycle.self, cycle.data = cycle, data  # type: ignore[attr-defined]
        watched = weakref.ref(cycle)
        del cycle, data

        memory.release_unused()

        assert watched() is None
    finally:
        memory.unsettle()
        if enabled:
            gc.enable()
    assert gc.get_freeze_count() == 0
