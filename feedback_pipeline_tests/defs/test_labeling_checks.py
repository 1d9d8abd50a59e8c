"""How the labeling checks hold a day's ids against the day it extends."""

from pathlib import Path

import pandas as pd
import pytest

from feedback_pipeline.defs.labeling.checks import _same_ids
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import storage

DAY = "2026-10-02"


def _events(n: int) -> pd.DataFrame:
    ids = pd.Series([f"f{i}" for i in range(n)], dtype="string[pyarrow]")
    return pd.DataFrame({"feedback_id": ids, "value": range(n)})


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The assets whose stored days are read through ``PipelineSettings.stored``, in order."""
    assets: list[str] = []
    original = PipelineSettings.stored

    def stored(self: PipelineSettings, asset: str, *args, **kwargs) -> pd.DataFrame:
        assets.append(asset)
        return original(self, asset, *args, **kwargs)

    monkeypatch.setattr(PipelineSettings, "stored", stored)
    return assets


@pytest.fixture
def pipeline(data_dir: Path) -> PipelineSettings:
    return PipelineSettings()


def _store(pipeline: PipelineSettings, frame: pd.DataFrame, **options) -> None:
    path = storage.partition_path(pipeline.data_path("warehouse"), "feedback_events", DAY)
    storage.write_parquet(frame, path, **options)


def test_the_same_ids_in_order_are_found_by_the_stored_fingerprint(pipeline, reads) -> None:
    _store(pipeline, _events(500), rows_key="feedback_id")
    ids = _events(500)["feedback_id"]

    assert _same_ids(pipeline, ids, "feedback_events", DAY, "feedback_id") == (500, True)
    assert reads == []  # not read: the fingerprint said so


@pytest.mark.parametrize("rows_key", ["feedback_id", None])
def test_other_ids_or_another_order_are_judged_on_the_ids_read(pipeline, reads, rows_key) -> None:
    _store(pipeline, _events(500), rows_key=rows_key)
    ids = _events(500)["feedback_id"]
    changed = ids.copy()
    changed.iloc[250] = "f-other"

    def judge(candidate: pd.Series) -> tuple[int, bool]:
        return _same_ids(pipeline, candidate, "feedback_events", DAY, "feedback_id")

    assert judge(ids.iloc[::-1]) == (500, True)  # the same events, in another order
    assert judge(changed) == (500, False)
    assert judge(ids.iloc[:-1]) == (500, False)
    assert judge(pd.concat([ids, ids.iloc[:1]], ignore_index=True)) == (500, False)
    assert reads == ["feedback_events"] * 4  # each of them read the stored day's ids
    if rows_key is None:
        assert judge(ids) == (500, True)
