"""Columns that pandas takes over from Arrow leave no freed copy resident beside them.

Arrow's pool (mimalloc) hands back what it has freed only when it next allocates or frees; where
NumPy takes a day's columns over, ``memory.release_arrow`` hands them back as they are let go.
Measured in a fresh interpreter, whose resident memory holds nothing else of the kind, against
the same work with the release switched off, so that the test tells the two apart. And the
package, imported first, keeps Arrow's pool from asking for transparent huge pages.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.lib import storage
from feedback_pipeline_tests.conftest import printed_last

_MEASURE = """
import json, sys
import numpy as np
from feedback_pipeline.lib import ingestion, storage

if sys.argv[2] == "off":
    storage.release_arrow = ingestion.release_arrow = lambda: None

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

before = resident()
frame = storage.read_parquet(sys.argv[1])
read = resident() - before
size = int(frame.memory_usage(deep=True).sum())
keep = np.ones(len(frame), dtype=bool)
keep[::100] = False
before = resident()
kept = ingestion._take_rows(frame, keep)
taken = resident() - before
print(json.dumps({"size": size, "read": read, "taken": taken}))
"""


def _measure(path: Path, release: str) -> dict[str, int]:
    return json.loads(printed_last(_MEASURE, str(path), release))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4M rows of four numbers with missing values (pandas copies them out of Arrow): 122 MiB."""
    rng = np.random.default_rng(0)
    n = 4_000_000
    frame = pd.DataFrame(
        {f"x{i}": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)) for i in range(4)}
    )
    path = tmp_path_factory.mktemp("arrow_memory") / "day.parquet"
    storage.write_parquet(frame, str(path))
    return path


def test_a_read_day_holds_about_its_own_size_and_without_the_release_much_more(
    day: Path,
) -> None:
    released, kept = _measure(day, "on"), _measure(day, "off")

    assert released["read"] < 1.3 * released["size"]
    # Without the release, Arrow's decoded columns stay resident beside pandas' copies.
    assert kept["read"] > 1.6 * kept["size"]


def test_taking_a_day_s_rows_lets_the_old_columns_go_as_it_goes(day: Path) -> None:
    released, kept = _measure(day, "on"), _measure(day, "off")

    # The new columns are about the day's size and the old ones go back as they are taken.
    assert released["taken"] < 0.3 * released["size"]
    assert kept["taken"] > 0.7 * kept["size"]


_HUGE_PAGES = """
import ctypes
import sys

# A process inherits huge pages switched off from its parent (this test's own process has
# imported the package): the measure starts from them switched on.
ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)  # PR_SET_THP_DISABLE, 0
if sys.argv[1] == "package first":
    import feedback_pipeline  # noqa: F401
import pyarrow as pa

buffer = pa.allocate_buffer(256 * 2**20)
ctypes.memset(buffer.address, 1, buffer.size)  # touched: its pages are faulted in
with open("/proc/self/smaps_rollup") as rollup:
    huge = [line.split()[1] for line in rollup if line.startswith("AnonHugePages:")]
print(int(huge[0]) * 1024)
"""


def _huge_page_bytes(order: str, environment: dict[str, str]) -> int:
    return int(printed_last(_HUGE_PAGES, order, env=environment, timeout=60))


def _transparent_huge_pages() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(
    "[madvise]" not in _transparent_huge_pages(),
    reason="only where Linux gives huge pages to the memory that asks for them",
)
def test_arrow_s_pool_takes_ordinary_pages_once_the_package_is_imported_first() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}

    # Alone, Arrow's mimalloc asks for huge pages; imported after the package, it does not; a
    # value the user set is left as it is.
    assert _huge_page_bytes("arrow alone", environment) >= 128 * 2**20
    assert _huge_page_bytes("package first", environment) == 0
    chosen = environment | {"MIMALLOC_ALLOW_THP": "1"}
    assert _huge_page_bytes("package first", chosen) >= 128 * 2**20
