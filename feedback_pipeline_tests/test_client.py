"""The instrumentation client: what it writes is ingested whole, what it refuses writes nothing."""

import datetime as dt
import re
import threading
from pathlib import Path

import pandas as pd
import pytest

import feedback_pipeline.client as client_module
from feedback_pipeline.client import LandingClient
from feedback_pipeline.lib.ingestion import ingest_feedback, ingest_inferences
from feedback_pipeline.lib.landing import landing_files
from feedback_pipeline.lib.settings import DATA_DIR_ENV, SETTINGS_ENV, Settings, load_settings

DAY = dt.date(2026, 10, 5)
NEXT_DAY = DAY + dt.timedelta(days=1)
NAME = re.compile(r"client-\d{8}T\d{12}-[0-9a-f]{32}\.parquet")
COUNTRIES = ["US", "DE", "FR", "GB", "BR", "IN", "JP"]
PLATFORMS = ["ios", "android", "web"]
PLANS = ["free", "plus", "pro"]
CHANNELS = ["organic", "paid_search", "social", "referral", "email"]
DEVICES = ["phone", "tablet", "desktop"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    return load_settings()


@pytest.fixture
def client(settings: Settings) -> LandingClient:
    return LandingClient(settings)


def _predictions(n: int, stamps: list | None = None, start: int = 0) -> pd.DataFrame:
    """Predictions in the user's column names of the shipped settings, every value allowed."""
    features = load_settings().inference_columns.features
    assert len(features) == 20
    ids = range(start, start + n)
    frame = pd.DataFrame(
        {
            "request_id": [f"p{i}" for i in ids],
            "customer_id": [f"c{i % 7}" for i in ids],
            "served_at": stamps
            if stamps is not None
            else [f"2026-10-05T{10 + i % 10:02d}:{i % 60:02d}:00" for i in ids],
            "model": "conversion_propensity",
            "model_version": ["v1" if i % 2 else "v2" for i in ids],
            "score": [(i % 10) / 10 for i in ids],
            "latency_ms": [5.0 + i for i in ids],
            "country": [COUNTRIES[i % len(COUNTRIES)] for i in ids],
            "platform": [PLATFORMS[i % len(PLATFORMS)] for i in ids],
            "plan": [PLANS[i % len(PLANS)] for i in ids],
            "acquisition_channel": [CHANNELS[i % len(CHANNELS)] for i in ids],
            "device_class": [DEVICES[i % len(DEVICES)] for i in ids],
        }
    )
    for k, name in enumerate(features):
        frame[name] = [float(i * k % 97) for i in ids]
    return frame


def _files(settings: Settings, dataset: str) -> list[Path]:
    """Every file under a landing root, temporary ones included."""
    root = Path(settings.resolve(getattr(settings.landing, dataset)))
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- predictions -----------------------------------------------------------------------------


def test_logged_predictions_are_ingested_with_every_row_valid(
    client: LandingClient, settings: Settings
) -> None:
    frame = _predictions(60)

    paths = client.log_predictions(frame)

    assert len(paths) == 1
    path = Path(paths[0])
    assert path.parent == Path(settings.resolve("landing/inferences")) / "date=2026-10-05"
    assert NAME.fullmatch(path.name)
    assert landing_files(settings.resolve(settings.landing.inferences), DAY) == paths
    result = ingest_inferences(settings, DAY)
    assert len(result.quarantine) == 0, result.quarantine["message"].tolist()
    assert len(result.valid) == 60
    valid = result.valid.set_index("prediction_id").loc[frame["request_id"]]
    assert valid["entity_id"].tolist() == frame["customer_id"].tolist()
    assert valid["score"].tolist() == frame["score"].tolist()
    assert set(valid["model_version"]) == {"v1", "v2"}
    assert set(valid["model_name"]) == {"conversion_propensity"}
    assert valid["tenure_days"].tolist() == frame["tenure_days"].tolist()
    assert (result.valid["timestamp"].dt.date == DAY).all()


def test_rows_of_two_utc_days_land_in_two_day_folders(
    client: LandingClient, settings: Settings
) -> None:
    stamps = ["2026-10-05T23:30:00Z"] * 3 + ["2026-10-06T00:30:00Z"] * 2
    paths = client.log_predictions(_predictions(5, stamps))

    assert [Path(p).parent.name for p in paths] == ["date=2026-10-05", "date=2026-10-06"]
    first, second = ingest_inferences(settings, DAY), ingest_inferences(settings, NEXT_DAY)
    assert first.valid["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert second.valid["prediction_id"].tolist() == ["p3", "p4"]
    assert len(first.quarantine) == len(second.quarantine) == 0


def test_naive_timestamps_are_utc_and_offset_ones_are_converted(
    client: LandingClient, settings: Settings
) -> None:
    stamps = [
        "2026-10-05T23:30:00",  # naive: UTC, Oct 5
        "2026-10-06T01:00:00+02:00",  # Oct 5 23:00 UTC
        "2026-10-05T23:00:00-02:00",  # Oct 6 01:00 UTC
        dt.datetime(2026, 10, 5, 12, 0),  # naive datetime: UTC
    ]
    client.log_predictions(_predictions(4, stamps))
    aware = _predictions(1, start=4)
    aware["served_at"] = pd.Series(pd.to_datetime(["2026-10-05 20:30"])).dt.tz_localize(
        "America/New_York"
    )  # Oct 6 00:30 UTC
    client.log_predictions(aware)

    def stamps_of(day: dt.date) -> dict[str, pd.Timestamp]:
        valid = ingest_inferences(settings, day).valid
        return dict(zip(valid["prediction_id"], valid["timestamp"], strict=True))

    def utc(text: str) -> pd.Timestamp:
        return pd.Timestamp(text, tz="UTC")

    assert stamps_of(DAY) == {
        "p0": utc("2026-10-05 23:30"),
        "p1": utc("2026-10-05 23:00"),
        "p3": utc("2026-10-05 12:00"),
    }
    assert stamps_of(NEXT_DAY) == {"p2": utc("2026-10-06 01:00"), "p4": utc("2026-10-06 00:30")}


def test_optional_columns_may_be_left_out(client: LandingClient, settings: Settings) -> None:
    frame = _predictions(3)[
        ["request_id", "customer_id", "served_at", "score", "model", "model_version"]
    ]

    client.log_predictions(frame)

    result = ingest_inferences(settings, DAY)
    assert len(result.quarantine) == 0, result.quarantine["message"].tolist()
    assert result.valid["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert result.valid["latency_ms"].isna().all()
    assert result.valid["country"].isna().all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[0:0], "empty"),
        (lambda f: f.drop(columns=["served_at", "model"]), r"'served_at' \(timestamp\)"),
        (lambda f: f.drop(columns=["request_id"]), r"'request_id' \(prediction id\)"),
        (lambda f: f.assign(request_id=["p0", "p1", "p0"]), "repeats id.*'p0'"),
        (lambda f: f.assign(request_id=["p0", None, "p2"]), "null or blank.*rows 1"),
        (lambda f: f.assign(served_at=["2026-10-05", "soon", None]), "unparsable.*'soon'"),
        (lambda f: f.assign(score=[0.1, "high", 0.3]), "cannot be stored"),
    ],
    ids=[
        "empty_frame",
        "missing_columns",
        "missing_id_column",
        "duplicate_ids",
        "null_id",
        "bad_timestamp",
        "mixed_types",
    ],
)
def test_a_bad_prediction_frame_is_refused_and_nothing_is_written(
    client: LandingClient, settings: Settings, change, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.log_predictions(change(_predictions(3)))

    assert _files(settings, "inferences") == []


def test_a_failed_write_removes_the_files_of_the_same_call(
    client: LandingClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = client_module.write_parquet, []

    def fail_second(frame: pd.DataFrame, path: str) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(frame, path)

    monkeypatch.setattr(client_module, "write_parquet", fail_second)
    stamps = ["2026-10-05T10:00:00", "2026-10-06T10:00:00"]

    with pytest.raises(OSError, match="disk full"):
        client.log_predictions(_predictions(2, stamps))

    assert len(calls) == 2
    assert _files(settings, "inferences") == []


def test_repeated_calls_never_overwrite_an_earlier_file(
    client: LandingClient, settings: Settings
) -> None:
    frame = _predictions(4)
    first = client.log_predictions(frame)
    before = Path(first[0]).read_bytes()

    second = client.log_predictions(frame)
    third = client.log_feedback(kind="click", value=1, prediction_id="p0", feedback_id="f1")
    fourth = client.log_feedback(kind="click", value=1, prediction_id="p0", feedback_id="f1")

    assert len({*first, *second}) == 2
    assert third != fourth
    assert Path(first[0]).read_bytes() == before
    assert len(_files(settings, "inferences")) == 2
    assert len(_files(settings, "feedback")) == 2


# --- feedback --------------------------------------------------------------------------------


def test_logged_feedback_is_ingested_with_kind_value_and_ids(
    client: LandingClient, settings: Settings
) -> None:
    at = "2026-10-05T12:00:00"
    paths = [
        client.log_feedback(kind="thumb", value=1, prediction_id="p1", user_id="u1", timestamp=at),
        client.log_feedback(
            kind="rating", value=4, entity_id="c2", timestamp=dt.datetime(2026, 10, 5, 13)
        ),
        client.log_feedback(kind="comment", prediction_id="p3", text="great offer", timestamp=at),
        client.log_feedback(
            kind="dwell", value=12.5, prediction_id="p4", feedback_id="evt-4", timestamp=at
        ),
        client.log_feedback(
            kind="label",
            value=0,
            prediction_id="p5",
            entity_id="c5",
            source="implicit",
            timestamp=dt.datetime(2026, 10, 5, 16, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        ),
    ]

    assert {Path(p).parent.name for p in paths} == {"date=2026-10-05"}
    assert all(NAME.fullmatch(Path(p).name) for p in paths)
    result = ingest_feedback(settings, DAY)
    assert len(result.quarantine) == 0, result.quarantine["message"].tolist()
    events = result.valid.set_index("source_file").loc[paths].reset_index()
    assert events["kind"].tolist() == ["thumb", "rating", "comment", "dwell", "label"]
    assert events["value"].tolist()[:2] == [1.0, 4.0]
    assert events.loc[2, "value"] > 0.5  # a comment's value is the sentiment of its text
    assert events["value"].tolist()[3:] == [12.5, 0.0]
    assert events["prediction_id"].tolist()[:1] == ["p1"]
    assert pd.isna(events.loc[1, "prediction_id"])
    assert events.loc[1, "entity_id"] == "c2"
    assert events.loc[2, "text"] == "great offer"
    assert events.loc[3, "feedback_id"] == "evt-4"
    assert events.loc[0, "user_id"] == "u1"
    assert events["source"].tolist() == ["explicit", "explicit", "explicit", "implicit", "implicit"]
    assert events.loc[4, "timestamp"] == pd.Timestamp("2026-10-05 14:00", tz="UTC")
    assert events["feedback_id"].str.fullmatch(r"[0-9a-f]{32}|evt-4").all()


def test_implicit_kinds_default_to_an_implicit_source_and_now(
    client: LandingClient, settings: Settings
) -> None:
    before = pd.Timestamp.now(tz="UTC")
    path = client.log_feedback(kind="conversion", value=1, prediction_id="p9")

    day = dt.date.fromisoformat(Path(path).parent.name.removeprefix("date="))
    assert before.date() <= day <= dt.datetime.now(dt.UTC).date()
    event = ingest_feedback(settings, day).valid.iloc[0]
    assert event["source"] == "implicit"
    assert before <= event["timestamp"] <= pd.Timestamp.now(tz="UTC")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "vote", "value": 1, "prediction_id": "p"}, "unknown feedback kind 'vote'"),
        ({"kind": "rating", "value": 7, "prediction_id": "p"}, "between 1 and 5.*got 7"),
        ({"kind": "thumb", "value": 0, "prediction_id": "p"}, r"-1 or \+1.*got 0"),
        ({"kind": "label", "value": 0.5, "prediction_id": "p"}, "0 or 1"),
        ({"kind": "dwell", "value": -3, "prediction_id": "p"}, "at least 0"),
        ({"kind": "rating", "prediction_id": "p"}, "needs a value"),
        ({"kind": "rating", "value": "5", "prediction_id": "p"}, "must be a number"),
        ({"kind": "thumb", "value": 1}, "prediction_id or an entity_id"),
        ({"kind": "thumb", "value": 1, "prediction_id": " "}, "prediction_id is blank"),
        ({"kind": "comment", "prediction_id": "p"}, "comment needs its text"),
        ({"kind": "comment", "prediction_id": "p", "text": "  "}, "comment needs its text"),
        ({"kind": "thumb", "value": 1, "prediction_id": "p", "source": "crm"}, "source must be"),
        (
            {"kind": "thumb", "value": 1, "prediction_id": "p", "timestamp": "last tuesday"},
            "ISO 8601",
        ),
        ({"kind": "thumb", "value": 1, "prediction_id": "p", "timestamp": 3}, "must be a datetime"),
    ],
    ids=[
        "unknown_kind",
        "rating_7",
        "thumb_0",
        "label_half",
        "negative_dwell",
        "no_value",
        "text_value",
        "no_ids",
        "blank_id",
        "comment_without_text",
        "comment_with_blank_text",
        "bad_source",
        "bad_timestamp",
        "timestamp_not_a_date",
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_written(
    client: LandingClient, settings: Settings, arguments: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.log_feedback(**arguments)

    assert _files(settings, "feedback") == []


def test_a_feedback_batch_is_written_per_day_and_ingested(
    client: LandingClient, settings: Settings
) -> None:
    batch = pd.DataFrame(
        {
            "prediction_id": ["p1", None, "p3"],
            "entity_id": [None, "c2", None],
            "timestamp": ["2026-10-05T10:00:00Z", "2026-10-05T11:00:00", "2026-10-06T09:00:00"],
            "kind": ["thumb", "rating", "click"],
            "value": [-1, 3, 1],
        }
    )

    paths = client.log_feedback_batch(batch)

    assert [Path(p).parent.name for p in paths] == ["date=2026-10-05", "date=2026-10-06"]
    first, second = ingest_feedback(settings, DAY), ingest_feedback(settings, NEXT_DAY)
    assert len(first.quarantine) == len(second.quarantine) == 0
    assert first.valid["kind"].tolist() == ["thumb", "rating"]
    assert first.valid["value"].tolist() == [-1.0, 3.0]
    assert first.valid["entity_id"].tolist()[1] == "c2"
    assert second.valid["source"].tolist() == ["implicit"]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (pd.DataFrame(columns=["kind", "prediction_id", "value"]), "empty"),
        (pd.DataFrame({"kind": ["thumb"], "request_id": ["p"], "value": [1]}), "unknown column"),
        (pd.DataFrame({"value": [1], "prediction_id": ["p"]}), "'kind'"),
        (
            pd.DataFrame(
                {"kind": ["thumb", "rating"], "prediction_id": ["p", "q"], "value": [1, 9]}
            ),
            r"row 1: a rating value must be between 1 and 5",
        ),
        (
            pd.DataFrame(
                {
                    "kind": ["thumb", "thumb"],
                    "prediction_id": ["p", "q"],
                    "value": [1, 1],
                    "feedback_id": ["f", "f"],
                }
            ),
            "repeated within the batch: 'f'",
        ),
    ],
    ids=["empty_frame", "unknown_column", "no_kind", "bad_row", "duplicate_ids"],
)
def test_a_bad_feedback_batch_is_refused_and_nothing_is_written(
    client: LandingClient, settings: Settings, batch: pd.DataFrame, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.log_feedback_batch(batch)

    assert _files(settings, "feedback") == []


def test_concurrent_writers_never_clobber_each_other(
    client: LandingClient, settings: Settings
) -> None:
    paths: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def writer(w: int) -> None:
        start.wait()
        try:
            for i in range(25):
                kind, value = ("thumb", 1 if i % 2 else -1) if w % 2 else ("rating", 1 + i % 5)
                path = client.log_feedback(
                    kind=kind,
                    value=value,
                    prediction_id=f"p{w}-{i}",
                    timestamp=f"2026-10-05T{w:02d}:{i:02d}:00",
                )
                with lock:
                    paths.append(path)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(paths)) == 200
    assert [str(p) for p in _files(settings, "feedback")] == sorted(paths)
    result = ingest_feedback(settings, DAY)
    assert len(result.quarantine) == 0
    assert len(result.valid) == 200
    assert result.valid["feedback_id"].nunique() == 200
    assert result.valid["prediction_id"].nunique() == 200


# --- module-level functions ------------------------------------------------------------------


def test_module_functions_use_a_default_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_default", None)

    [prediction_file] = client_module.log_predictions(_predictions(2))
    feedback_file = client_module.log_feedback(
        kind="thumb", value=1, prediction_id="p0", timestamp="2026-10-05T12:00:00Z"
    )

    assert client_module.default_client() is client_module.default_client()
    assert prediction_file.startswith(settings.resolve(settings.landing.inferences))
    assert ingest_inferences(settings, DAY).valid["prediction_id"].tolist() == ["p0", "p1"]
    assert Path(feedback_file).parent.name == "date=2026-10-05"
    assert ingest_feedback(settings, DAY).valid["kind"].tolist() == ["thumb"]
