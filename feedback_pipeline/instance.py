"""The persistent Dagster instance the CLI records its runs in."""

import os
import shutil
from pathlib import Path

from feedback_pipeline.lib.settings import Settings


def prepare_dagster_home(settings: Settings) -> Path:
    """Points ``DAGSTER_HOME`` under the data directory (unless set), with the instance file."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path(settings.data_root) / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    for candidate in (Path.cwd() / "dagster.yaml", Path(__file__).parents[1] / "dagster.yaml"):
        if candidate.is_file() and not (home / "dagster.yaml").exists():
            shutil.copyfile(candidate, home / "dagster.yaml")
            break
    return home
