"""Shared fixtures: a temporary data directory with a few simulated days in it."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_pipeline.defs.resources import HELPER_ENV
from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings, load_settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline.simulate.traffic import SimulationConfig

SMALL = {
    "rows_per_day": 400,
    "covariate_drift_day": 3,
    "concept_drift_day": 5,
    "latency_regression_day": 6,
    "spam_days": (2,),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a test marked ``slow`` first, each file's tests kept together and in order.

    ``make test`` hands whole files to one worker per core as each becomes free; started last,
    a file of a few minutes would run on alone at the end.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(autouse=True, scope="session")
def _runs_without_a_helper_unless_asked():
    """Runs do their Evidently, Great Expectations and MLflow work in their own steps.

    A helper process forked for each of the suite's many small runs would build Great
    Expectations' context and open the workspace and MLflow's store again for every run, which
    doubles the suite's time; ``test_pipeline`` and ``test_helper`` ask for the helper.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HELPER_ENV, "0")
        yield


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory that the settings resolve to."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """The shipped demo settings, with data under the temporary directory."""
    return load_settings()


def small_config(settings: Settings, days: int) -> SimulationConfig:
    """A small simulation starting at the first partition day."""
    return SimulationConfig(start_date=settings.start_date, days=days, **SMALL)


@pytest.fixture
def simulated(settings: Settings) -> list[dt.date]:
    """Eight simulated days of landing files; returns their dates."""
    config = small_config(settings, days=8)
    simulate_landing(settings, config)
    return [config.day(i) for i in range(config.days)]


def printed_last(script: str, *args: str, env: dict[str, str] | None = None, timeout=120) -> str:
    """The last line ``script`` prints, run with ``args`` in a fresh interpreter of this venv.

    For what only a new process shows: its memory from the start, what it imports first. A
    script that fails fails the test with the end of its error output.
    """
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]
