"""A night's steps leave nothing of their days in memory once their outputs are written."""

import gc
import json
import os
import weakref
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.defs.resources import PipelineSettings, WarehouseIOManager
from feedback_pipeline.lib import memory
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import printed_last, small_config

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
    return json.loads(
        printed_last(script, config.day(0).isoformat(), env=os.environ.copy(), timeout=300)
    )


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


# Resident memory around a 256 MiB array freed and a 192 MiB one made next, in a fresh
# interpreter: what glibc keeps, and hands back, shows in the process's resident set. (Not 256
# MiB again: the objects the interpreter makes meanwhile take a little of the freed array.)
_HOLD_AND_LET_GO = """
import json, sys
import numpy as np
from feedback_pipeline.lib import memory

MIB = 2**20

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

if sys.argv[1] == "hold":
    assert memory.hold() and memory.held()
figures = {}
start = resident()
array = np.ones(256 * MIB, dtype=np.uint8)
figures["made"] = resident() - start
del array
memory.release_unused(collect=False)  # at a step boundary
figures["freed"] = resident() - start
again = np.ones(192 * MIB, dtype=np.uint8)  # the freed array's pages, less what was made since
figures["made_again"] = resident() - start
del again
memory.let_go()
figures["let_go"] = resident() - start
figures["held_after"] = memory.held()
print(json.dumps(figures))
"""


def _hold_figures(mode: str) -> dict:
    return json.loads(printed_last(_HOLD_AND_LET_GO, mode))


@pytest.mark.skipif(memory._libc_function("mallopt") is None, reason="glibc's mallopt")
def test_a_held_process_reuses_what_it_freed_and_hands_it_back_once_let_go() -> None:
    mib = 2**20
    held, plain = _hold_figures("hold"), _hold_figures("plain")

    assert held["made"] > 250 * mib and plain["made"] > 250 * mib
    # Held: the freed array stays resident, and the next one is made in its pages.
    assert held["freed"] > 250 * mib
    assert held["made_again"] < held["freed"] + 32 * mib
    # Let go: handed back, as the plain process hands it back as soon as it is freed.
    assert held["let_go"] < 32 * mib and not held["held_after"]
    assert plain["freed"] < 32 * mib


def test_the_warehouse_holds_memory_during_a_run_and_lets_go_after(
    settings: Settings, data_dir: Path
) -> None:
    seen: dict[str, bool] = {}

    @dg.asset
    def probe() -> pd.DataFrame:
        seen["during"] = memory.held()
        return pd.DataFrame({"x": [1]})

    for hold_memory in (True, False):
        pipeline = PipelineSettings()
        io_manager = WarehouseIOManager(
            pipeline=pipeline, base_dir=str(data_dir / "warehouse"), hold_memory=hold_memory
        )
        result = dg.materialize([probe], resources={"pipeline": pipeline, "io_manager": io_manager})

        assert result.success
        expected = hold_memory and memory._libc_function("mallopt") is not None
        assert seen["during"] is expected
        assert not memory.held()


def test_the_collector_is_off_in_the_block_and_as_it_was_after() -> None:
    frozen = gc.get_freeze_count()
    try:
        with memory.collector_off():
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() == frozen  # nothing set aside without freeze
        gc.disable()
        with memory.collector_off():
            pass
        assert not gc.isenabled()  # off before, off after
        gc.enable()
        with pytest.raises(ValueError), memory.collector_off(freeze=True):
            kept = [{"n": n} for n in range(10_000)]
            raise ValueError(len(kept))
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + 10_000  # what the block made, set aside
    finally:
        gc.enable()
        gc.unfreeze()
