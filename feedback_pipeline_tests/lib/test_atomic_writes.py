"""A writer that dies half way leaves the previous good file, never half of a new one.

Two ways to die are tried: a child process writing a large frame with ``storage.write_parquet`` is
killed with SIGKILL while its temporary file is being filled (no ``finally`` runs), and the disk
"fills up" in-process: every file opened for writing under the test's directory accepts half of
the first chunk written to it, then raises ``ENOSPC``. The second covers every writer of the
pipeline, whatever library opens its files (builtin ``open``, ``pathlib``, fsspec, pyarrow,
pandas, Evidently).

A killed ``write_parquet`` leaves its temporary file (``part-0.parquet.tmp-<hex>``) behind, by
design: nothing runs after SIGKILL. The tests assert that the readers do not pick it up.
"""

import builtins
import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.defs.resources import DailyParquetIOManager
from feedback_pipeline.lib import dashboard, labeling_queue, quarantine, reports, storage
from feedback_pipeline.lib.landing import landing_files
from feedback_pipeline.lib.settings import DATA_DIR_ENV, load_settings

DAY = "2026-10-05"
TMP_MARK = ".tmp-"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _good_frame() -> pd.DataFrame:
    return pd.DataFrame({"prediction_id": ["p0", "p1", "p2"], "score": [0.1, 0.5, 0.9]})


# --- SIGKILL in the middle of write_parquet -----------------------------------------------------

# The child slows its disk writes (a short sleep after each one) so that the kill lands while
# the temporary file is being filled; what it writes and how it renames are untouched.
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np, pandas as pd
    from fsspec.implementations.local import LocalFileOpener
    from feedback_pipeline.lib import storage

    real_write = LocalFileOpener.write
    def slow_write(self, *args, **kwargs):
        written = real_write(self, *args, **kwargs)
        self.f.flush()
        time.sleep(0.02)
        return written
    LocalFileOpener.write = slow_write

    rng = np.random.default_rng(0)
    n = 2_000_000
    frame = pd.DataFrame(
        {"prediction_id": np.arange(n).astype(str), "score": rng.random(n), "x": rng.random(n)}
    )
    print("writing", flush=True)
    storage.write_parquet(frame, sys.argv[1])
    print("done", flush=True)
    """
)


def _kill_mid_write(target: Path) -> tuple[int, int]:
    """Runs the child writer on ``target``, kills it once its temporary file holds bytes.

    Returns the child's return code and the size of the temporary file seen before the kill.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = 0
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            temporary = [p for p in target.parent.iterdir() if TMP_MARK in p.name]
            if temporary and temporary[0].stat().st_size > 0:
                seen = temporary[0].stat().st_size
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
    return child.returncode, seen


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A warehouse with one good day, overwritten by a writer killed half way; and a day whose
    very first write was killed."""
    root = tmp_path_factory.mktemp("data") / "warehouse"
    good = _good_frame()
    target = Path(storage.partition_path(str(root), "inference_log", DAY))
    storage.write_parquet(good, str(target))
    before = _digest(target)
    code, seen = _kill_mid_write(target)
    first = Path(storage.partition_path(str(root), "labeled_predictions", DAY))
    first.parent.mkdir(parents=True)
    first_code, first_seen = _kill_mid_write(first)
    return {
        "root": root,
        "good": good,
        "target": target,
        "before": before,
        "code": code,
        "seen": seen,
        "first": first,
        "first_code": first_code,
        "first_seen": first_seen,
    }


def test_a_killed_writer_was_killed_while_writing_its_temporary_file(killed: dict) -> None:
    assert killed["code"] == -signal.SIGKILL
    assert killed["seen"] > 0
    assert killed["first_code"] == -signal.SIGKILL
    assert killed["first_seen"] > 0


def test_a_killed_overwrite_leaves_the_previous_good_file(killed: dict) -> None:
    target: Path = killed["target"]
    assert _digest(target) == killed["before"]
    pd.testing.assert_frame_equal(storage.read_parquet(str(target)), killed["good"])
    assert storage.row_counts(str(killed["root"]), "inference_log", [DAY]) == {DAY: 3}
    columns = storage.columns_of_days(str(killed["root"]), "inference_log", [DAY], ["score"])
    assert columns["score"].tolist() == [0.1, 0.5, 0.9]


def test_the_killed_writers_temporary_file_is_left_but_not_read(killed: dict) -> None:
    # SIGKILL skips write_parquet's clean-up: the temporary file stays beside the target.
    names = sorted(p.name for p in killed["target"].parent.iterdir())
    assert len(names) == 2
    assert names[0] == "part-0.parquet"
    assert names[1].startswith("part-0.parquet.tmp-")
    # The readers look for part-0.parquet alone.
    assert quarantine.days_with_data(str(killed["root"]), "inference_log") == [DAY]
    assert quarantine.load(str(killed["root"]), "inference_log", DAY).shape == (3, 2)
    # Landing folders skip temporary files as well (a client upload killed half way).
    folder = killed["target"].parent
    assert landing_files(str(folder.parent), pd.Timestamp(DAY).date()) == [
        str(folder / "part-0.parquet")
    ]


def test_a_killed_first_write_leaves_no_day_to_read(killed: dict) -> None:
    first: Path = killed["first"]
    assert not first.exists()
    with pytest.raises(FileNotFoundError):
        storage.read_parquet(str(first))
    assert storage.row_counts(str(killed["root"]), "labeled_predictions", [DAY]) == {}
    assert quarantine.days_with_data(str(killed["root"]), "labeled_predictions") == []


def test_a_killed_first_write_is_not_listed_as_a_materialized_day(
    killed: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedback_pipeline.defs.analysis import collect

    monkeypatch.setenv(DATA_DIR_ENV, str(killed["root"].parent))
    settings = load_settings()
    assert settings.resolve("warehouse") == str(killed["root"])
    assert collect.materialized_days(settings, "inference_log") == [DAY]
    assert collect.materialized_days(settings, "labeled_predictions") == []


# --- the disk fills up half way through a write -------------------------------------------------


class _HalfThenFull:
    """A file that takes half of the first chunk written to it, then says the disk is full."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: Any) -> int:
        self._file.write(data[: max(1, len(data) // 2)])
        self._file.flush()
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def __enter__(self) -> "_HalfThenFull":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __iter__(self) -> Any:
        return iter(self._file)


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Makes every file opened for writing under a directory fail half way through."""

    def arm(root: Path) -> None:
        real_open = builtins.open

        def failing_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            writing = any(m in mode for m in "wax+")
            inside = isinstance(file, str | os.PathLike) and str(os.fspath(file)).startswith(
                str(root)
            )
            return _HalfThenFull(handle) if writing and inside else handle

        monkeypatch.setattr(builtins, "open", failing_open)
        monkeypatch.setattr(io, "open", failing_open)

    return arm


def _visible(folder: Path) -> list[str]:
    """The files a reader listing the folder would see (temporary and hidden names left out)."""
    return sorted(p.name for p in folder.iterdir() if TMP_MARK not in p.name and p.name[0] != ".")


def _parquet_writers() -> dict[str, Callable[[pd.DataFrame, Path], None]]:
    def io_manager(frame: pd.DataFrame, path: Path) -> None:
        manager = DailyParquetIOManager(base_path=None)
        manager.dump_to_path(dg.build_output_context(), frame, path)  # pyright: ignore[reportArgumentType]

    return {
        "write_parquet": lambda f, p: storage.write_parquet(f, str(p)),
        "io_manager": io_manager,
    }


@pytest.mark.parametrize("writer", ["write_parquet", "io_manager"])
def test_a_failed_parquet_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, disk_full: Callable[[Path], None], writer: str
) -> None:
    write = _parquet_writers()[writer]
    target = tmp_path / "warehouse" / "inference_log" / f"date={DAY}" / "part-0.parquet"
    write(_good_frame(), target)
    before = _digest(target)

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        write(pd.DataFrame({"prediction_id": ["new"] * 1000, "score": 0.3}), target)

    assert _digest(target) == before
    pd.testing.assert_frame_equal(storage.read_parquet(str(target)), _good_frame())
    # The writer removes its temporary file when the write fails.
    assert sorted(p.name for p in target.parent.iterdir()) == ["part-0.parquet"]


def test_a_failed_quarantine_write_leaves_the_old_quarantine(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    root = str(tmp_path / "quarantine")
    rows = pd.DataFrame(
        {
            "source_file": ["a.csv"],
            "source_row": pd.array([3], dtype="Int64"),
            "reason": ["score failed"],
        }
    )
    path = Path(storage.partition_path(root, "inference_log", DAY))
    storage.write_parquet(rows, str(path))
    before = _digest(path)

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        storage.write_parquet(pd.concat([rows] * 50, ignore_index=True), str(path))

    assert _digest(path) == before
    pd.testing.assert_frame_equal(quarantine.load(root, "inference_log", DAY), rows)
    assert quarantine.days_with_data(root, "inference_log") == [DAY]


def test_a_failed_corrections_write_keeps_the_earlier_corrections(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    root = str(tmp_path / "corrections")
    first = pd.DataFrame(
        {"source_file": ["a.csv"], "source_row": [1], "record": ['{"score": 0.4}']}
    )
    quarantine.add_corrections(root, "inference_log", DAY, first)
    path = Path(storage.partition_path(root, "inference_log", DAY))
    before = _digest(path)

    disk_full(tmp_path)
    more = pd.DataFrame({"source_file": ["a.csv"], "source_row": [2], "record": ['{"score": 0.6}']})
    with pytest.raises(OSError, match="No space left"):
        quarantine.add_corrections(root, "inference_log", DAY, more)

    assert _digest(path) == before
    stored = quarantine.load_corrections(root, "inference_log", DAY)
    assert stored.to_dict(orient="records") == first.to_dict(orient="records")


def _quality_report(day: str, seed: int) -> reports.DayReport:
    rng = np.random.default_rng(seed)
    labeled = pd.DataFrame({"label": rng.integers(0, 2, 60), "score": rng.random(60)})
    report = reports.quality_report(
        labeled, 0.5, day=day, model_version="v1", sample_rows=1000, seed=seed
    )
    assert report is not None
    return report


def test_a_failed_report_save_leaves_the_old_html_and_json(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    directory = tmp_path / "reports"
    html, data = reports.save(_quality_report(DAY, seed=1), str(directory))
    before = {p: _digest(Path(p)) for p in (html, data)}

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        reports.save(_quality_report(DAY, seed=2), str(directory))

    assert {p: _digest(Path(p)) for p in (html, data)} == before
    # The half-written report stays as a hidden ".quality.html.partial" beside the good files:
    # nothing lists the folder (the pipeline passes the two paths on), and the next save
    # replaces it.
    folder = Path(html).parent
    assert _visible(folder) == ["quality.html", "quality.json"]
    assert {p.name for p in folder.iterdir()} <= {
        "quality.html",
        "quality.json",
        ".quality.html.partial",
        ".quality.json.partial",
    }


# --- the labeling queue and the dashboard (storage.write_bytes) --------------------------------


def test_a_failed_labeling_queue_write_leaves_the_old_queue(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    directory = str(tmp_path / "labeling_queue" / f"date={DAY}")
    queue = pd.DataFrame(
        {
            "prediction_id": ["p0", "p1"],
            "score": [0.45, 0.55],
            "uncertainty": [0.9, 0.9],
            "stratum": ["US", "DE"],
            "timestamp": pd.Timestamp("2026-10-05T10:00:00Z"),
            "model_version": "v1",
        }
    )
    paths = labeling_queue.write(queue, directory, 0.5, [])
    before = {k: _digest(Path(p)) for k, p in paths.items()}

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        labeling_queue.write(pd.concat([queue] * 20), directory, 0.5, [])

    assert {k: _digest(Path(p)) for k, p in paths.items()} == before
    assert sorted(p.name for p in Path(directory).iterdir()) == [
        "label_config.xml",
        "queue.csv",
        "tasks.json",
    ]


def test_a_failed_dashboard_render_leaves_the_old_page(
    tmp_path: Path, disk_full: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "dashboard" / "index.html"
    pages = iter(["<html>good</html>\n", "<html>" + "new " * 5000 + "</html>\n"])
    monkeypatch.setattr(dashboard, "render_html", lambda data: next(pages))
    dashboard.render(None, str(page))  # type: ignore[arg-type]
    before = _digest(page)

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        dashboard.render(None, str(page))  # type: ignore[arg-type]

    assert _digest(page) == before
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html"]


class _Tables:
    """Stands in for DashboardData: write_tables only asks for its tables and status."""

    def __init__(self, rows: int) -> None:
        self.status: list = []
        self.rows = rows

    def tables(self) -> list[tuple[str, pd.DataFrame]]:
        return [("metrics", pd.DataFrame({"day": [DAY] * self.rows, "accuracy": 0.8}))]


def test_a_failed_dashboard_table_write_leaves_the_old_csv(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    directory = tmp_path / "dashboard"
    (path,) = dashboard.write_tables(_Tables(2), str(directory))  # type: ignore[arg-type]
    before = _digest(Path(path))

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        dashboard.write_tables(_Tables(500), str(directory))  # type: ignore[arg-type]

    assert _digest(Path(path)) == before
    assert sorted(p.name for p in directory.iterdir()) == ["metrics.csv"]


# --- the fix export, written in place until it went through the atomic writer too ------------


def test_a_failed_fix_export_leaves_the_old_export(
    tmp_path: Path, disk_full: Callable[[Path], None]
) -> None:
    rows = pd.DataFrame(
        {"source_file": ["a.csv"], "source_row": [3], "record": ['{"request_id": "p3"}']}
    )
    path = tmp_path / "fixes.jsonl"
    quarantine.export_fixes(rows, str(path))
    before = _digest(path)

    disk_full(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        quarantine.export_fixes(pd.concat([rows] * 100), str(path))

    assert _digest(path) == before
