"""Tests of the landing zone the simulator writes: layout, names, incidents, dirt, determinism."""

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from feedback_pipeline.lib.ingestion import (
    conservation,
    ingest_feedback,
    ingest_inferences,
    to_utc,
)
from feedback_pipeline.lib.landing import landing_files, read_file
from feedback_pipeline.lib.settings import DATA_DIR_ENV, SETTINGS_ENV, load_settings
from feedback_pipeline.simulate.landing import (
    REDELIVERED_DAY,
    TRUNCATED_DAY,
    simulate_landing,
)
from feedback_pipeline.simulate.traffic import FEATURES, SimulationConfig

DAYS = 10
CONFIG = SimulationConfig(
    start_date=dt.date(2026, 10, 1),
    days=DAYS,
    rows_per_day=1200,
    seed=11,
    covariate_drift_day=3,
    concept_drift_day=4,
    latency_regression_day=6,
    spam_days=(2, 7),
)
INFERENCE_NAMES = [
    "request_id",
    "customer_id",
    "served_at",
    "model",
    "model_version",
    "score",
    "latency_ms",
    "country",
    "platform",
    "plan",
    "acquisition_channel",
    "device_class",
    *FEATURES,
]
FEEDBACK_NAMES = [
    "event_id",
    "request_id",
    "customer_id",
    "received_at",
    "kind",
    "value",
    "text",
    "source",
    "user_id",
]


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> tuple[Path, dict]:
    """One simulated landing zone shared by the module's tests (they only read it)."""
    root = tmp_path_factory.mktemp("landing")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(SETTINGS_ENV, raising=False)
        patch.setenv(DATA_DIR_ENV, str(root))
        manifest = simulate_landing(load_settings(), CONFIG)
    return root, manifest


@pytest.fixture
def settings(landed, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(landed[0]))
    return load_settings()


def day_dir(root: Path, kind: str, index: int) -> Path:
    return root / "landing" / kind / f"date={CONFIG.day(index):%Y-%m-%d}"


def test_inference_folders_hold_each_format_under_the_users_names(landed, settings):
    root, _ = landed
    folders = sorted(p.name for p in (root / "landing" / "inferences").iterdir())
    assert folders == [f"date={CONFIG.day(i):%Y-%m-%d}" for i in range(DAYS)]
    for index in range(DAYS):
        folder = day_dir(root, "inferences", index)
        names = sorted(p.name for p in folder.iterdir())
        expected = {"part-0.parquet", "part-0.csv", "part-0.jsonl"}
        if index == TRUNCATED_DAY:
            expected.add("part-1.parquet")
        if index == REDELIVERED_DAY + 1:
            expected.add("redelivered.jsonl")
        assert set(names) == expected, index
        rows = 0
        for name in ("part-0.parquet", "part-0.csv", "part-0.jsonl"):
            frame = read_file(str(folder / name))
            assert list(frame.columns) == INFERENCE_NAMES, (index, name)
            rows += len(frame)
        # 60% / 25% / 15% of the day's rows in Parquet / CSV / JSON Lines.
        assert rows == CONFIG.rows_per_day
        assert len(read_file(str(folder / "part-0.parquet"))) == 720
        assert len(read_file(str(folder / "part-0.csv"))) == 300
    # The user's names come from the settings; the hidden truth never lands.
    cols = settings.inference_columns
    assert [cols.prediction_id, cols.entity_id, cols.timestamp] == INFERENCE_NAMES[:3]
    sample = read_file(str(day_dir(root, "inferences", 0) / "part-0.parquet"))
    assert not {"prediction_id", "entity_id", "timestamp", "true_label"} & set(sample.columns)
    assert sample["request_id"].str.startswith("p-20261001-").sum() >= 700


def test_truth_is_kept_apart_for_the_evaluation(landed):
    root, manifest = landed
    truth = pd.read_parquet(root / "simulation" / "truth.parquet")
    assert list(truth.columns) == ["prediction_id", "model_version", "score", "true_label"]
    assert len(truth) == DAYS * CONFIG.rows_per_day == manifest["predictions"]
    assert truth["prediction_id"].is_unique
    assert set(truth["true_label"]) == {0, 1}


def test_feedback_lands_by_received_day_never_after_the_last_day(landed):
    root, manifest = landed
    last = CONFIG.day(DAYS - 1)
    folders = sorted(p.name for p in (root / "landing" / "feedback").iterdir())
    assert folders == [f"date={CONFIG.day(i):%Y-%m-%d}" for i in range(DAYS)]
    total = 0
    for index in range(DAYS):
        folder = day_dir(root, "feedback", index)
        assert sorted(p.name for p in folder.iterdir()) == [
            "app.jsonl",
            "crm.csv",
            "events.parquet",
        ]
        kinds = {
            "crm.csv": {"label", "correction"},
            "app.jsonl": {"thumb", "rating", "comment"},
            "events.parquet": {"click", "dwell", "conversion"},
        }
        for name, expected_kinds in kinds.items():
            frame = read_file(str(folder / name))
            assert list(frame.columns) == FEEDBACK_NAMES, (index, name)
            total += len(frame)
            received = to_utc(frame["received_at"])
            # Only the few deliberately broken timestamps do not parse.
            assert received.isna().mean() < 0.01
            assert (received.dropna().dt.date == CONFIG.day(index)).all(), (index, name)
            assert (received.dropna().dt.date <= last).all()
            # Only the few deliberately broken kinds ("emoji") are unknown.
            kind = frame["kind"]
            assert set(kind) - expected_kinds <= {"emoji"}, (index, name)
            assert (~kind.isin(expected_kinds)).mean() < 0.01
    assert total == manifest["feedback_events"]


def test_manifest_lists_the_incidents_with_dates(landed):
    root, returned = landed
    manifest = json.loads((root / "simulation" / "manifest.json").read_text())
    # The returned manifest is the written one (tuples become JSON lists on the way).
    assert manifest == json.loads(json.dumps(returned))
    assert manifest["config"]["spam_days"] == [2, 7]
    assert manifest["incidents"] == {
        "covariate_drift_from": "2026-10-04",
        "concept_drift_from": "2026-10-05",
        "latency_regression_from": "2026-10-07",
        "latency_regression_version": "v2",
        "spam_days": ["2026-10-03", "2026-10-08"],
        "truncated_file_day": "2026-10-06",
        "redelivered_file_day": "2026-10-10",
    }
    assert manifest["config"]["start_date"] == "2026-10-01"
    assert manifest["config"]["seed"] == 11
    assert manifest["config"]["days"] == DAYS
    assert manifest["predictions"] == DAYS * CONFIG.rows_per_day
    assert manifest["feedback_events"] > manifest["predictions"]


def test_truncated_file_cannot_be_read(landed, settings):
    root, _ = landed
    truncated = day_dir(root, "inferences", TRUNCATED_DAY) / "part-1.parquet"
    assert TRUNCATED_DAY == 5
    assert truncated.stat().st_size > 0
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises on a cut footer
        read_file(str(truncated))
    # The day's other files are fine, and ingestion quarantines the broken one whole.
    result = ingest_inferences(settings, CONFIG.day(TRUNCATED_DAY))
    unreadable = result.quarantine[result.quarantine["check"] == "unreadable_file"]
    assert unreadable["source_file"].tolist() == [str(truncated)]
    assert unreadable["source_row"].isna().all()
    assert len(result.valid) > 0.95 * CONFIG.rows_per_day


def test_redelivered_file_repeats_the_previous_days_json_lines(landed):
    root, _ = landed
    assert REDELIVERED_DAY + 1 == 9
    original = read_file(str(day_dir(root, "inferences", REDELIVERED_DAY) / "part-0.jsonl"))
    again = read_file(str(day_dir(root, "inferences", REDELIVERED_DAY + 1) / "redelivered.jsonl"))
    assert len(again) == 180
    pd.testing.assert_series_equal(again["request_id"], original["request_id"])
    pd.testing.assert_frame_equal(again, original)
    assert again["request_id"].dropna().str.startswith("p-20261009-").all()
    # The redelivered day's own parts are new predictions.
    own = read_file(str(day_dir(root, "inferences", REDELIVERED_DAY + 1) / "part-0.jsonl"))
    assert not set(own["request_id"].dropna()) & set(again["request_id"].dropna())


def test_ingestion_quarantines_the_dirty_rows(landed, settings):
    day = CONFIG.day(3)
    result = ingest_inferences(settings, day)
    paths = landing_files(settings.resolve(settings.landing.inferences), day)
    rows_in = sum(len(read_file(p)) for p in paths)
    assert rows_in == CONFIG.rows_per_day
    assert len(result.valid) + len(result.quarantine) == rows_in
    assert conservation(paths, result.valid, result.quarantine)["conserved"].all()
    share = len(result.quarantine) / rows_in
    assert 0.003 <= share <= 0.03
    assert result.quarantine["check"].nunique() >= 3
    # What stays is valid.
    valid = result.valid
    assert valid["prediction_id"].is_unique
    assert valid["score"].between(0, 1).all()
    assert (valid["latency_ms"].dropna() >= 0).all()
    assert valid["country"].isin(settings.segment_values["country"]).all()
    assert valid["platform"].isin(settings.segment_values["platform"]).all()
    assert (valid["timestamp"].dt.date == day).all()
    assert (valid["predicted_label"] == (valid["score"] >= 0.5).astype("Int8")).all()


def test_ingestion_of_every_day_quarantines_one_to_few_percent(landed, settings):
    checks: set[str] = set()
    quarantined = valid = 0
    for index in range(DAYS):
        result = ingest_inferences(settings, CONFIG.day(index))
        quarantined += len(result.quarantine)
        valid += len(result.valid)
        checks |= set(result.quarantine["check"])
    share = quarantined / (quarantined + valid)
    assert 0.003 <= share <= 0.03
    assert {"not_nullable", "duplicate_id", "unreadable_file", "unparsable_timestamp"} <= checks
    assert any(c.startswith("isin(") for c in checks)
    assert "not_in_the_future" in checks
    assert "greater_than_or_equal_to(0.0)" in checks
    assert "less_than_or_equal_to(1.0)" in checks


def test_feedback_ingestion_keeps_most_events(landed, settings):
    result = ingest_feedback(settings, CONFIG.day(3))
    total = len(result.valid) + len(result.quarantine)
    assert total > 1000
    assert 0 < len(result.quarantine) / total < 0.02
    assert set(result.valid["kind"]) == {
        "label",
        "correction",
        "thumb",
        "rating",
        "click",
        "dwell",
        "conversion",
        "comment",
    }
    assert result.valid["feedback_id"].is_unique


def test_same_seed_writes_identical_landing_files(tmp_path, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    config = SimulationConfig(
        start_date=dt.date(2026, 10, 1), days=6, rows_per_day=600, seed=5, spam_days=(1,)
    )
    manifests = []
    for name in ("first", "second"):
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / name))
        manifests.append(simulate_landing(load_settings(), config))
    assert manifests[0] == manifests[1]
    first, second = tmp_path / "first", tmp_path / "second"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    parquet = [f for f in files if f.suffix == ".parquet"]
    assert len(parquet) >= 2 * 6
    for relative in parquet:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
        if relative.name == "part-1.parquet":
            continue  # the truncated file: identical bytes, but no frame to read back
        pd.testing.assert_frame_equal(
            read_file(str(first / relative)), read_file(str(second / relative))
        )
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    # A different seed changes the content.
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "other"))
    simulate_landing(load_settings(), SimulationConfig(**{**config.__dict__, "seed": 6}))
    relative = Path("landing/inferences/date=2026-10-01/part-0.parquet")
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(
            read_file(str(first / relative)), read_file(str(tmp_path / "other" / relative))
        )
