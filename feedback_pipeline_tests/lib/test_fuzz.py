"""Fuzzing ingestion and attribution with hostile input: nothing crashes, nothing is lost.

Hypothesis writes landing files of mixed-up values (numbers as text, missing values, infinities,
huge and tiny floats, empty strings, emoji, right-to-left and combining characters, control
characters, repeated ids, naive, aware and garbage timestamps) as CSV, JSON Lines or Parquet, with
now and then a line that cannot be parsed. Whatever it writes, every record must come out either
valid or quarantined, exactly once, and the valid rows must honour the contract. Random
predictions and feedback go through attribution and labeling, which must conserve every event.
"""

import csv
import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib.attribution import (
    LABEL_STATUSES,
    STATUSES,
    attribute_feedback,
    feedback_counts,
    label_predictions,
)
from feedback_pipeline.lib.ingestion import IngestResult, ingest_feedback, ingest_inferences
from feedback_pipeline.lib.schemas import VALUE_RULES, feedback_schema, inference_schema
from feedback_pipeline.lib.settings import (
    ConflictRule,
    FeedbackKind,
    FeedbackKindSettings,
    Landing,
    Settings,
    default_settings_path,
    load_settings,
)
from feedback_pipeline.lib.storage import day_end

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 10, 5)
_SHIPPED = load_settings(default_settings_path())
BOUND = day_end(DAY) + _SHIPPED.max_clock_skew
FEATURES = _SHIPPED.inference_columns.features
FORMATS = ("csv", "jsonl", "parquet")
# Derandomized: the suite runs the same examples every time, so CI never flakes. `make fuzz` runs
# ten times as many (FEEDBACK_PIPELINE_FUZZ_SCALE=10: 5,700 examples), with fresh random ones.
SCALE = int(os.environ.get("FEEDBACK_PIPELINE_FUZZ_SCALE", "1"))
FUZZ = hypothesis_settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    database=None,
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- messy values ------------------------------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "\t",
    "😀",
    "👩‍👩‍👧",  # a zero-width-joined emoji sequence
    "مرحبا",
    "שלום",
    "e\u0301",  # e + combining acute accent
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\x1b[0m",
    "\x7f",
    "a\r\nb",
    'quote"inside',
    "comma,inside",
    "nan",
    "NaN",
    "null",
    "None",
    "inf",
    "-Infinity",
    "1e309",
    "0x1F",
    "1,5",
    "١",  # Arabic-Indic digit one
    "½",
    "true",
    "US",
    "v1",
]
MISSING = st.sampled_from([None, math.nan, ""])
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 5e-324, 1.7976931348623157e308, -1e-300, 2**53 + 1]),
)
NUMBER_TEXT = st.tuples(NUMBERS, st.sampled_from(["", " ", "\t"])).map(
    lambda pair: f"{pair[1]}{pair[0]!r}{pair[1]}"
)
# Unicode line breaks other than "\n" (U+2028, U+2029, U+0085) once crashed ingestion; they have
# their own minimal tests at the end, and stay out of the random text to keep it readable.
LINE_BREAKS = "\u2028\u2029\u0085"
ANY_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="\x00" + LINE_BREAKS, exclude_categories=["Cs"]
    ),
    max_size=6,
)
MESSY = st.one_of(MISSING, NUMBERS, NUMBER_TEXT, st.sampled_from(NASTY_STRINGS), ANY_TEXT)

TIMESTAMPS = st.one_of(
    st.tuples(
        st.integers(0, 23), st.integers(0, 59), st.sampled_from(["", "Z", "+02:00", "-0530"])
    ).map(lambda t: f"2026-10-05T{t[0]:02d}:{t[1]:02d}:00{t[2]}"),
    st.integers(0, 86_399).map(lambda s: pd.Timestamp("2026-10-05") + pd.Timedelta(seconds=s)),
    st.integers(0, 86_399).map(
        lambda s: pd.Timestamp("2026-10-05", tz="Europe/Berlin") + pd.Timedelta(seconds=s)
    ),
    st.sampled_from(
        [
            "2026-10-05 23:59:59.999999999",
            "2026-10-06T00:59:59+00:00",  # inside the clock skew
            "2026-10-06T01:00:01Z",  # just past it
            "2099-01-01T00:00:00",
            "1970-01-01T00:00:00",
            "2026-02-30T10:00:00",
            "2026-10-05T25:00:00",
            "5 Oct 2026",
            "1759658400",
        ]
    ),
    MESSY,
)


def _maybe(good: st.SearchStrategy, bad: st.SearchStrategy = MESSY) -> st.SearchStrategy:
    """Mostly a good value, sometimes a bad one (hypothesis shrinks toward the good one)."""
    return st.one_of(good, good, good, bad)


# --- landing files ------------------------------------------------------------------------------

GARBAGE = {
    "csv": ["only,three,fields", "x"],
    # Lines that are JSON but not an object have their own minimal test at the end; lines that
    # are not JSON at all are fuzzed here.
    "jsonl": ["{not json", '{"request_id": ', "}{"],
}


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _parquet_column(values: list[Any]) -> pa.Array:
    """The values as Arrow allows them: one type per column, or all as text when mixed."""
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        text = [None if _text(v) == "" and v != "" else _text(v) for v in values]
        return pa.array(text, type=pa.string())


def _write_landing(
    folder: Path, fmt: str, columns: list[str], rows: list[dict], garbage: dict[int, str]
) -> tuple[str, int]:
    """Writes the rows (and garbage lines at the given positions); returns path and records."""
    path = folder / f"part.{fmt}"
    if fmt == "parquet":
        table = pa.table({c: _parquet_column([r[c] for r in rows]) for c in columns})
        pq.write_table(table, path)
        return str(path), len(rows)
    lines: list[str] = []
    for row in rows:
        if fmt == "csv":
            text = _csv_line([_text(row[c]) for c in columns])
        else:
            ensure_ascii = (len(lines) % 2) == 0
            text = json.dumps({c: _json_value(row[c]) for c in columns}, ensure_ascii=ensure_ascii)
        lines.append(text)
    for position, line in sorted(garbage.items()):
        lines.insert(min(position, len(lines)), line)
    header = _csv_line(columns) + "\r\n" if fmt == "csv" else ""
    path.write_bytes((header + "".join(f"{line}\r\n" for line in lines)).encode("utf-8"))
    return str(path), len(lines)


def _csv_line(values: list[str]) -> str:
    out: list[str] = []
    writer = csv.writer(_Collect(out), quoting=csv.QUOTE_ALL, lineterminator="")
    writer.writerow(values)
    return out[0]


class _Collect:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _records(
    draw: st.DrawFn, make: Any, columns: list[str]
) -> tuple[str, list[str], list[dict], dict[int, str]]:
    fmt = draw(st.sampled_from(FORMATS))
    n = draw(st.integers(1, 12))
    rows = [make(draw, i) for i in range(n)]
    dropped = draw(st.sampled_from(columns)) if draw(st.integers(0, 15)) == 0 else None
    kept = [c for c in columns if c != dropped]
    garbage: dict[int, str] = {}
    if fmt in GARBAGE and draw(st.integers(0, 3)) == 0:
        garbage = draw(
            st.dictionaries(st.integers(0, n), st.sampled_from(GARBAGE[fmt]), max_size=2)
        )
    return fmt, kept, rows, garbage


def _conserved(result: IngestResult, path: str, records: int) -> None:
    """Every record written is valid or quarantined exactly once, by its row number."""
    assert result.files["readable"].tolist() == [True]
    assert result.quarantine["source_row"].notna().all()
    rows = [*result.valid["source_row"].astype(int), *result.quarantine["source_row"].astype(int)]
    assert sorted(rows) == list(range(records))
    assert set(result.valid["source_file"].astype(str)) <= {path}
    assert set(result.quarantine["source_file"].astype(str)) <= {path}
    assert result.quarantine["reason"].notna().all()
    assert (result.quarantine["reason"].astype(str).str.len() > 0).all()


def _landing(tmp: str, dataset: str) -> tuple[Settings, Path]:
    folder = Path(tmp) / dataset / f"date={DAY:%Y-%m-%d}"
    folder.mkdir(parents=True)
    landing = {"inferences": f"{tmp}/inferences", "feedback": f"{tmp}/feedback"}
    return _SHIPPED.model_copy(update={"landing": Landing(**landing)}), folder


# --- inferences ---------------------------------------------------------------------------------

ALLOWED = _SHIPPED.segment_values | _SHIPPED.categorical_values
INFERENCE_COLUMNS = [
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
ID_POOL = ["p0", "p1", "p2", "😀", "e\u0301", "ה1", " p0"]


def _inference(draw: st.DrawFn, i: int) -> dict:
    good_number = st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), NUMBER_TEXT)
    row = {
        "request_id": draw(_maybe(st.just(f"r{i}"), st.one_of(st.sampled_from(ID_POOL), MESSY))),
        "customer_id": draw(_maybe(st.sampled_from(["c1", "c2", "👩‍👩‍👧"]))),
        "served_at": draw(TIMESTAMPS),
        "model": draw(_maybe(st.just("conversion_propensity"))),
        "model_version": draw(_maybe(st.sampled_from(["v1", "v2"]))),
        "score": draw(_maybe(st.floats(0, 1), st.one_of(MESSY, st.floats(-1e-9, 1 + 1e-9)))),
        "latency_ms": draw(_maybe(st.floats(0, 1e4))),
        **{name: draw(_maybe(st.sampled_from(sorted(ALLOWED[name])))) for name in ALLOWED},
    }
    fuzzed = draw(st.sets(st.sampled_from(FEATURES), max_size=2))
    for n, name in enumerate(FEATURES):
        row[name] = draw(st.one_of(good_number, MESSY)) if name in fuzzed else float(n)
    return row


@st.composite
def _inference_files(draw: st.DrawFn) -> tuple[str, list[str], list[dict], dict[int, str]]:
    return _records(draw, _inference, INFERENCE_COLUMNS)


@hypothesis_settings(FUZZ, max_examples=70 * SCALE)
@given(_inference_files())
def test_any_inference_file_is_valid_or_quarantined_row_by_row(
    written: tuple[str, list[str], list[dict], dict[int, str]],
) -> None:
    fmt, columns, rows, garbage = written
    with tempfile.TemporaryDirectory() as tmp:
        settings, folder = _landing(tmp, "inferences")
        path, records = _write_landing(folder, fmt, columns, rows, garbage)
        result = ingest_inferences(settings, DAY, seen_ids=pd.Index(["p2"]))

    _conserved(result, path, records)
    valid = result.valid
    assert valid["prediction_id"].is_unique
    assert "p2" not in set(valid["prediction_id"])  # ingested on an earlier day
    if len(valid):
        assert (valid["prediction_id"].str.len() > 0).all()
        assert (valid["entity_id"].str.len() > 0).all()
        assert valid["score"].between(0.0, 1.0).all()
        assert valid["latency_ms"].isna().sum() + (valid["latency_ms"] >= 0).sum() == len(valid)
        assert valid["timestamp"].notna().all()
        assert (valid["timestamp"] <= BOUND).all()
        assert valid["predicted_label"].isin([0, 1]).all()
        for name, allowed in ALLOWED.items():
            assert valid[name].dropna().isin(allowed).all()
    assert str(valid["timestamp"].dtype) == "datetime64[ns, UTC]" or not len(valid)
    # The contract itself accepts what was let through.
    inference_schema(settings, day_end(DAY)).validate(valid.copy(), lazy=True)
    # A file without a required column keeps nothing.
    if len(columns) < len(INFERENCE_COLUMNS):
        assert len(valid) == 0


# --- feedback -----------------------------------------------------------------------------------

FEEDBACK_COLUMNS = [
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
KIND_NAMES = [k.value for k in FeedbackKind]
GOOD_VALUES = {
    kind: (list(bounds) if rule == "in" else [bounds[0], 3.0])  # type: ignore[index]
    for kind, (rule, bounds) in VALUE_RULES.items()
} | {"comment": [None, 0.2]}


def _event(draw: st.DrawFn, i: int) -> dict:
    kind = draw(_maybe(st.sampled_from(KIND_NAMES)))
    values = GOOD_VALUES.get(kind, [1.0]) if isinstance(kind, str) else [1.0]
    return {
        "event_id": draw(_maybe(st.just(f"f{i}"), st.one_of(st.sampled_from(ID_POOL), MESSY))),
        "request_id": draw(_maybe(st.sampled_from(["p0", "p1", None]))),
        "customer_id": draw(_maybe(st.sampled_from(["c1", "😀", None]))),
        "received_at": draw(TIMESTAMPS),
        "kind": kind,
        # Numbers here; a value that is not one has its own minimal test at the end.
        "value": draw(
            _maybe(st.sampled_from(values), st.one_of(st.sampled_from([None, math.nan]), NUMBERS))
        ),
        "text": draw(_maybe(st.sampled_from([None, "great", "terrible 😡", "‏טוב"]))),
        "source": draw(_maybe(st.sampled_from(["explicit", "implicit", None]))),
        "user_id": draw(_maybe(st.sampled_from(["u1", "u2"]))),
    }


@st.composite
def _feedback_files(draw: st.DrawFn) -> tuple[str, list[str], list[dict], dict[int, str]]:
    return _records(draw, _event, FEEDBACK_COLUMNS)


def _fits_kind(kind: str, value: float) -> bool:
    if kind not in VALUE_RULES:
        return True
    rule, bounds = VALUE_RULES[kind]
    if rule == "in":
        return value in bounds  # type: ignore[operator]
    low, high = bounds  # type: ignore[misc]
    return (rule == "range_or_missing" and math.isnan(value)) or low <= value <= high


@hypothesis_settings(FUZZ, max_examples=100 * SCALE)
@given(_feedback_files())
def test_any_feedback_file_is_valid_or_quarantined_row_by_row(
    written: tuple[str, list[str], list[dict], dict[int, str]],
) -> None:
    fmt, columns, rows, garbage = written
    with tempfile.TemporaryDirectory() as tmp:
        settings, folder = _landing(tmp, "feedback")
        path, records = _write_landing(folder, fmt, columns, rows, garbage)
        result = ingest_feedback(settings, DAY, seen_ids=pd.Index(["f2"]))

    _conserved(result, path, records)
    valid = result.valid
    assert valid["feedback_id"].is_unique
    assert "f2" not in set(valid["feedback_id"])
    if len(valid):
        assert (valid["feedback_id"].str.len() > 0).all()
        assert valid["kind"].astype(str).isin([k.value for k in settings.feedback_kinds]).all()
        assert valid["timestamp"].notna().all()
        assert (valid["timestamp"] <= BOUND).all()
        assert valid["source"].dropna().isin(["explicit", "implicit"]).all()
        target = [
            any(isinstance(v, str) and v.strip() for v in (p, e))
            for p, e in zip(
                valid["prediction_id"].astype(object).where(valid["prediction_id"].notna()),
                valid["entity_id"].astype(object).where(valid["entity_id"].notna()),
                strict=True,
            )
        ]
        assert all(target)
        for kind, value in zip(valid["kind"].astype(str), valid["value"], strict=True):
            assert pd.isna(value) or _fits_kind(kind, float(value))
        comments = valid[valid["kind"].astype(str) == "comment"]
        assert comments["value"].dropna().between(-1.0, 1.0).all()
    feedback_schema(settings, day_end(DAY)).validate(valid.copy(), lazy=True)


# --- attribution and labeling ------------------------------------------------------------------

T0 = pd.Timestamp("2026-10-05", tz="UTC")
WINDOWS = [dt.timedelta(hours=1), dt.timedelta(hours=6), dt.timedelta(days=2), dt.timedelta(days=7)]
ENTITIES = ["a", "b", "😀", "e\u0301"]
LABEL_VALUES = {"label": [0.0, 1.0], "correction": [0.0, 1.0], "thumb": [-1.0, 1.0]}


@st.composite
def _attribution_day(
    draw: st.DrawFn,
) -> tuple[pd.DataFrame, pd.DataFrame, Settings, pd.Timestamp]:
    # Label kinds keep a class (the settings refuse mean and sum for them).
    keeps_class = [r for r in ConflictRule if r not in (ConflictRule.MEAN, ConflictRule.SUM)]
    kinds = {
        kind: FeedbackKindSettings(
            window=draw(st.sampled_from(WINDOWS)),
            conflict=draw(
                st.sampled_from(
                    keeps_class
                    if kind in (FeedbackKind.LABEL, FeedbackKind.CORRECTION)
                    else list(ConflictRule)
                )
            ),
        )
        for kind in FeedbackKind
    }
    settings = _SHIPPED.model_copy(update={"feedback_kinds": kinds})
    seconds = st.integers(-3 * 86_400, 3 * 86_400)
    n = draw(st.integers(0, 10))
    ids = draw(st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=n, max_size=n))
    preds = pd.DataFrame(
        {
            "prediction_id": pd.array(ids, dtype="string[pyarrow]"),
            "entity_id": pd.array(
                [draw(st.sampled_from(ENTITIES)) for _ in range(n)], dtype="string[pyarrow]"
            ),
            "timestamp": pd.DatetimeIndex(
                [T0 + pd.Timedelta(seconds=draw(seconds)) for _ in range(n)],
                dtype="datetime64[ns, UTC]",
            ),
            "score": [draw(st.floats(0, 1)) for _ in range(n)],
            "model_version": "v1",
        }
    )
    m = draw(st.integers(0, 25))
    rows = []
    for i in range(m):
        kind = draw(st.sampled_from([k.value for k in FeedbackKind]))
        prediction = draw(st.one_of(st.none(), st.sampled_from([*ids, "p99"])))
        entity = draw(
            st.sampled_from([*ENTITIES, "zz"]) if prediction else st.sampled_from(ENTITIES)
        )
        rows.append(
            {
                "feedback_id": f"f{i:02d}",
                "prediction_id": prediction,
                "entity_id": draw(st.one_of(st.none(), st.just(entity))) if prediction else entity,
                "timestamp": T0 + pd.Timedelta(seconds=draw(seconds)),
                "kind": kind,
                "value": draw(
                    st.one_of(st.none(), st.sampled_from(LABEL_VALUES.get(kind, [1.0, 3.0, 5.0])))
                ),
                "user_id": "u1",
            }
        )
    events = pd.DataFrame(
        rows,
        columns=[
            "feedback_id",
            "prediction_id",
            "entity_id",
            "timestamp",
            "kind",
            "value",
            "user_id",
        ],
    )
    for column in ("feedback_id", "prediction_id", "entity_id", "kind", "user_id"):
        events[column] = events[column].astype("string[pyarrow]")
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    events["value"] = events["value"].astype(float)
    as_of = T0 + pd.Timedelta(seconds=draw(st.integers(-86_400, 10 * 86_400)))
    return preds, events, settings, as_of


@hypothesis_settings(FUZZ, max_examples=400 * SCALE)
@given(_attribution_day())
def test_attribution_and_labeling_conserve_every_event(
    day: tuple[pd.DataFrame, pd.DataFrame, Settings, pd.Timestamp],
) -> None:
    preds, events, settings, as_of = day
    attributed = attribute_feedback(events, preds, settings)

    # Every event once, in its order; received = attributed + late + orphaned.
    assert attributed["feedback_id"].tolist() == events["feedback_id"].tolist()
    counts = feedback_counts(attributed)
    assert set(counts) == set(STATUSES)
    assert sum(counts.values()) == len(events)
    status = attributed["status"].astype(str)
    match = attributed["match"].astype(str)
    target = attributed["target_prediction_id"]
    assert (target.isna() == (status == "orphaned")).all()
    assert ((match == "none") == (status == "orphaned")).all()
    assert ((match == "prediction_id") == (events["prediction_id"].notna() & target.notna())).all()
    # Every attributed event points at an existing prediction, inside its kind's window.
    windows = {k.value: v.window.total_seconds() for k, v in settings.feedback_kinds.items()}
    logged = list(zip(preds["prediction_id"], preds["entity_id"], preds["timestamp"], strict=True))
    for event, found in zip(
        events.to_dict(orient="records"), attributed.to_dict(orient="records"), strict=True
    ):
        if found["status"] == "orphaned":
            continue
        target_id, when = found["target_prediction_id"], found["prediction_timestamp"]
        assert (target_id, when) in {(p, t) for p, _, t in logged}
        assert found["delay_s"] == (event["timestamp"] - when).total_seconds()
        assert (found["status"] == "late") == (found["delay_s"] > windows[event["kind"]])
        if found["match"] == "entity_asof":
            assert (target_id, event["entity_id"], when) in logged
            # The latest prediction of the entity at or before the event.
            before = [
                t for _, e, t in logged if e == event["entity_id"] and t <= event["timestamp"]
            ]
            assert when == max(before)
        else:
            assert target_id == event["prediction_id"]

    # One labeled row per prediction (the day's log holds each id once).
    unique = preds.drop_duplicates("prediction_id", ignore_index=True)
    labeled = label_predictions(unique, attributed, settings, as_of)
    assert labeled["prediction_id"].tolist() == unique["prediction_id"].tolist()
    counted = attributed[(status == "attributed") & (attributed["timestamp"] <= as_of)]
    per_prediction = counted["target_prediction_id"].value_counts()
    expected = per_prediction.reindex(unique["prediction_id"]).fillna(0).astype(int)
    assert labeled["n_feedback"].tolist() == expected.tolist()
    assert set(labeled["label_status"].astype(str)) <= set(LABEL_STATUSES)
    has_label = labeled["label"].notna()
    assert (has_label == (labeled["label_status"].astype(str) == "labeled")).all()
    assert labeled.loc[has_label, "label"].between(0.0, 1.0).all()
    assert np.isfinite(labeled["n_feedback"]).all()


# --- what the fuzzing found: minimal cases, fixed ----------------------------------------------


def _ingest_one_file(
    dataset: str, name: str, content: str | list[dict]
) -> tuple[IngestResult, str]:
    ingest = ingest_inferences if dataset == "inferences" else ingest_feedback
    with tempfile.TemporaryDirectory() as tmp:
        settings, folder = _landing(tmp, dataset)
        path = folder / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            pd.DataFrame(content).to_csv(path, index=False)
        return ingest(settings, DAY), str(path)


def _good_inference(i: int, **overrides: Any) -> dict:
    row: dict[str, Any] = {
        "request_id": f"r{i}",
        "customer_id": "c1",
        "served_at": "2026-10-05T10:00:00",
        "model": "conversion_propensity",
        "model_version": "v1",
        "score": 0.3,
        "latency_ms": 12.0,
        "country": "US",
        "platform": "ios",
        "plan": "free",
        "acquisition_channel": "organic",
        "device_class": "phone",
        **{name: float(n) for n, name in enumerate(FEATURES)},
    }
    return row | overrides


def test_a_feedback_value_that_is_not_a_number_is_quarantined_not_fatal() -> None:
    good = {
        "event_id": "f0",
        "request_id": "p0",
        "customer_id": "c1",
        "received_at": "2026-10-05T11:00:00",
        "kind": "thumb",
        "value": "1",
        "text": None,
        "source": "explicit",
        "user_id": "u1",
    }
    result, _ = _ingest_one_file(
        "feedback", "a.csv", [good, good | {"event_id": "f1", "value": "abc"}]
    )

    assert result.valid["feedback_id"].tolist() == ["f0"]
    assert result.quarantine["source_row"].tolist() == [1]
    assert result.quarantine["column"].tolist() == ["value"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_quarantined_record_holding_a_unicode_line_break_is_kept_whole(separator: str) -> None:
    rows = [_good_inference(0, score=2.0, plan=f"free{separator}x"), _good_inference(1)]
    result, _ = _ingest_one_file("inferences", "a.csv", rows)

    assert result.valid["prediction_id"].tolist() == ["r1"]
    assert result.quarantine["source_row"].tolist() == [0]
    assert json.loads(result.quarantine["record"].iloc[0])["plan"] == f"free{separator}x"


def test_a_json_lines_file_with_a_broken_line_keeps_records_holding_u2028() -> None:
    lines = [
        json.dumps(_good_inference(0, plan="free\u2028x"), ensure_ascii=False),
        "{broken",
        json.dumps(_good_inference(1), ensure_ascii=False),
    ]
    result, _ = _ingest_one_file("inferences", "a.jsonl", "\n".join(lines) + "\n")

    assert sorted(result.valid["source_row"]) == [2]
    assert sorted(result.quarantine["source_row"]) == [0, 1]
    assert result.quarantine.set_index("source_row").loc[1, "check"] == "unparsable_line"


@pytest.mark.parametrize("line", ["null", "42", '"text"', "[1, 2]", "true"])
def test_a_json_line_that_is_not_an_object_is_one_broken_row(line: str) -> None:
    lines = [json.dumps(_good_inference(0)), line, json.dumps(_good_inference(1))]
    result, _ = _ingest_one_file("inferences", "a.jsonl", "\n".join(lines) + "\n")

    assert result.files["readable"].tolist() == [True]
    assert sorted(result.valid["source_row"]) == [0, 2]
    assert result.quarantine["source_row"].tolist() == [1]
    assert result.quarantine["check"].tolist() == ["unparsable_line"]
