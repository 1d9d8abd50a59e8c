"""A night's steps leave nothing of their days in memory once their outputs are written."""

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_ingested_days_are_not_kept_in_memory_after_their_steps(
    settings: Settings, data_dir: Path
) -> None:
    config = small_config(settings, days=1)
    simulate_landing(settings, config)
    day = config.day(0).isoformat()
    (data_dir / "dagster_home").mkdir()

    done = subprocess.run(
        [sys.executable, "-c", _INGEST_AND_COUNT, day],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {"frames_of_100_rows_or_more": 0}
