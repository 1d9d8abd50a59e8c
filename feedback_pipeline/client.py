"""Logging predictions and feedback from an application straight into the landing zone.

An application instruments itself with a ``LandingClient`` (or the module-level ``log_predictions``
and ``log_feedback``): every call checks its input at once, raising ``ValueError`` that names the
problem, and then writes its rows as new Parquet files that the pipeline ingests like any other
landing file::

    <landing root>/date=YYYY-MM-DD/client-<UTC yyyymmddTHHMMSSffffff>-<uuid4 hex>.parquet

Rows go to the folder of the UTC day of their timestamp. Each file is written under a temporary
name and renamed into place (see ``storage.write_parquet``), and each name is new, so concurrent
writers in any number of threads or processes never overwrite each other and the pipeline never
reads half a file. A call that fails writes nothing: input is checked before the first file is
written, and files already written by a call whose later write fails are removed again.

Checks here are the ones a write cannot do without (columns, ids, timestamps, the feedback
contract of one event); row contents of predictions (score range, categories, ...) are checked
by the pipeline, which quarantines failing rows with the reason.
"""

import contextlib
import datetime as dt
import math
import numbers
import threading
import uuid
from collections.abc import Hashable, Iterable
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa

from feedback_pipeline.lib.ingestion import to_utc
from feedback_pipeline.lib.schemas import VALUE_RULES
from feedback_pipeline.lib.settings import Settings, load_settings
from feedback_pipeline.lib.storage import write_parquet

SOURCES = ("explicit", "implicit")
# Kinds whose events an application observes rather than asks for; every other kind is explicit.
IMPLICIT_KINDS = frozenset({"click", "conversion", "dwell"})
# The canonical feedback columns, in the order they are written.
FEEDBACK_FIELDS = (
    "feedback_id",
    "prediction_id",
    "entity_id",
    "timestamp",
    "kind",
    "value",
    "text",
    "source",
    "user_id",
)
# The inference roles a prediction frame must always have, with how they are named in messages.
REQUIRED_PREDICTION_ROLES = {
    "prediction_id": "prediction id",
    "entity_id": "entity id",
    "timestamp": "timestamp",
    "score": "score",
    "model_name": "model name",
    "model_version": "model version",
}
_SHOWN = 5  # how many offending values or rows an error message lists


class LandingClient:
    """Writes an application's predictions and feedback as new files in the landing zone.

    A client holds no state besides its settings, so one client can be shared by any number of
    threads.

    Args:
        settings: the deployment's settings; by default ``load_settings()`` (the file named by
            ``FEEDBACK_PIPELINE_SETTINGS``, else the shipped defaults). Landing locations are
            resolved on every write, so ``FEEDBACK_PIPELINE_DATA_DIR`` is honoured as it is then.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()

    # --- predictions -----------------------------------------------------------------------

    def log_predictions(self, frame: pd.DataFrame) -> list[str]:
        """Writes a batch of predictions, one new file per UTC day of their timestamps.

        The frame uses the user's column names (the settings' ``inference_columns``). The
        prediction id, entity id, timestamp, score, model name and model version columns are
        required, and so is the predicted label column if the settings name one. Configured
        columns that are left out (latency, segments, features) are written as nulls; other
        columns are written as given and ignored by the pipeline.

        Timestamps may be datetimes or ISO 8601 strings: tz-aware ones are converted to UTC,
        naive ones are taken as UTC. They are written as UTC timestamps.

        Args:
            frame: one row per prediction.

        Returns:
            The paths of the files written, in day order.

        Raises:
            TypeError: ``frame`` is not a pandas DataFrame.
            ValueError: the frame is empty, lacks a required column, has a null, blank or
                repeated prediction id, or a missing or unparsable timestamp. Nothing is written.
        """
        prepared = self._prepare_predictions(frame)
        timestamp = self.settings.inference_columns.timestamp
        root = self.settings.resolve(self.settings.landing.inferences)
        return _write_days(root, prepared, prepared[timestamp])

    def _prepare_predictions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The checked frame, timestamps in UTC and missing optional columns added as nulls."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        if frame.empty:
            raise ValueError("the prediction frame is empty: there is nothing to log")
        _check_unique_columns(frame)
        cols = self.settings.inference_columns
        names = cols.source_names()
        required = {role: names[role] for role in REQUIRED_PREDICTION_ROLES}
        roles = dict(REQUIRED_PREDICTION_ROLES)
        if cols.predicted_label is not None:
            required["predicted_label"] = cols.predicted_label
            roles["predicted_label"] = "predicted label"
        missing = [(name, roles[role]) for role, name in required.items() if name not in frame]
        if missing:
            listed = ", ".join(f"{name!r} ({role})" for name, role in missing)
            raise ValueError(
                f"the prediction frame lacks required column(s) {listed}; "
                f"its columns are {_names(frame.columns)}"
            )

        frame = frame.reset_index(drop=True)
        _check_ids(frame[cols.prediction_id], cols.prediction_id)
        frame[cols.timestamp] = _utc_column(frame[cols.timestamp], cols.timestamp)

        nullable_text = cols.segments + cols.categorical_features
        numeric = [cols.latency_ms, *cols.features]
        for name in [*numeric, *nullable_text]:
            if name not in frame:
                frame[name] = pd.Series(
                    None, index=frame.index, dtype="float64" if name in numeric else "object"
                )
        _check_storable(frame)
        return frame

    # --- feedback --------------------------------------------------------------------------

    def log_feedback(
        self,
        *,
        kind: str,
        value: float | None = None,
        prediction_id: str | None = None,
        entity_id: str | None = None,
        timestamp: dt.datetime | str | None = None,
        user_id: str | None = None,
        text: str | None = None,
        source: str | None = None,
        feedback_id: str | None = None,
    ) -> str:
        """Writes one feedback event as a new file in the folder of its UTC day.

        Args:
            kind: one of the kinds configured in the settings' ``feedback_kinds``.
            value: the feedback's value: 0/1 for label, correction, click and conversion, -1/+1
                for thumb, 1 to 5 for rating, seconds (at least 0) for dwell. Optional for a
                comment only.
            prediction_id: the prediction the feedback is about.
            entity_id: the entity it is about, when the prediction is not known (it is then
                attributed to the entity's latest prediction before it).
            timestamp: when the feedback was given; a datetime (naive ones are taken as UTC) or
                an ISO 8601 string. Default: now.
            user_id: who gave it.
            text: the text of a comment (required for ``comment``).
            source: ``explicit`` or ``implicit``; by default implicit for click, conversion and
                dwell and explicit for every other kind.
            feedback_id: a unique id of the event; default a new uuid4 hex. The pipeline keeps
                the first event of an id, so retrying with the same id cannot count it twice.

        Returns:
            The path of the file written.

        Raises:
            ValueError: the kind is not configured, neither id is given, the value is missing or
                not allowed for the kind, a comment has no text, the source is not ``explicit``
                or ``implicit``, or the timestamp cannot be read. Nothing is written.
        """
        event = self._feedback_event(
            {
                "kind": kind,
                "value": value,
                "prediction_id": prediction_id,
                "entity_id": entity_id,
                "timestamp": timestamp,
                "user_id": user_id,
                "text": text,
                "source": source,
                "feedback_id": feedback_id,
            },
            now=_now(),
        )
        frame = self._feedback_frame([event])
        root = self.settings.resolve(self.settings.landing.feedback)
        return _write_days(root, frame, frame[self.settings.feedback_columns.timestamp])[0]

    def log_feedback_batch(self, frame: pd.DataFrame) -> list[str]:
        """Writes many feedback events, one new file per UTC day of their timestamps.

        The frame uses the canonical column names, the arguments of ``log_feedback``:
        ``kind`` and at least one of ``prediction_id`` and ``entity_id`` are required, the others
        (``value``, ``timestamp``, ``user_id``, ``text``, ``source``, ``feedback_id``) optional.
        Each row is checked as ``log_feedback`` checks its arguments, and a missing cell takes
        the same default. Feedback ids must not repeat within the batch.

        Args:
            frame: one row per feedback event.

        Returns:
            The paths of the files written, in day order.

        Raises:
            TypeError: ``frame`` is not a pandas DataFrame.
            ValueError: the frame is empty, has an unknown or lacks a required column, repeats
                a feedback id, or any row fails a check (the message names the rows). Nothing is
                written.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        if frame.empty:
            raise ValueError("the feedback frame is empty: there is nothing to log")
        _check_unique_columns(frame)
        unknown = [c for c in frame.columns if c not in FEEDBACK_FIELDS]
        if unknown:
            raise ValueError(
                f"the feedback frame has unknown column(s) {_names(unknown)}; "
                f"expected the canonical names {list(FEEDBACK_FIELDS)}"
            )
        if "kind" not in frame:
            raise ValueError("the feedback frame lacks the required column 'kind'")
        if "prediction_id" not in frame and "entity_id" not in frame:
            raise ValueError(
                "the feedback frame needs a 'prediction_id' or an 'entity_id' column (has neither)"
            )

        now = _now()
        events, problems = [], []
        for number, row in enumerate(frame.to_dict(orient="records")):
            try:
                events.append(self._feedback_event({str(k): _cell(v) for k, v in row.items()}, now))
            except ValueError as exc:
                problems.append(f"row {number}: {exc}")
        if problems:
            shown = "; ".join(problems[:_SHOWN])
            more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
            raise ValueError(f"{len(problems)} invalid feedback row(s): {shown}{more}")
        ids = pd.Series([e["feedback_id"] for e in events])
        repeated = ids[ids.duplicated()].unique().tolist()
        if repeated:
            raise ValueError(f"feedback id(s) repeated within the batch: {_values(repeated)}")

        prepared = self._feedback_frame(events)
        root = self.settings.resolve(self.settings.landing.feedback)
        return _write_days(root, prepared, prepared[self.settings.feedback_columns.timestamp])

    def _feedback_event(self, raw: dict[str, Any], now: pd.Timestamp) -> dict[str, Any]:
        """One event in canonical columns with its defaults filled in, or ValueError."""
        kind = raw.get("kind")
        configured = [str(k) for k in self.settings.feedback_kinds]
        if not isinstance(kind, str) or str(kind) not in configured:
            raise ValueError(f"unknown feedback kind {kind!r}; the settings configure {configured}")
        kind = str(kind)

        prediction_id = _optional_id(raw.get("prediction_id"), "prediction_id")
        entity_id = _optional_id(raw.get("entity_id"), "entity_id")
        if prediction_id is None and entity_id is None:
            raise ValueError("feedback needs a prediction_id or an entity_id (got neither)")

        text = _optional_text(raw.get("text"), "text")
        if kind == "comment" and (text is None or not text.strip()):
            raise ValueError("a comment needs its text (got none)")
        value = _checked_value(kind, raw.get("value"))

        source = raw.get("source")
        if source is None:
            source = "implicit" if kind in IMPLICIT_KINDS else "explicit"
        elif source not in SOURCES:
            raise ValueError(f"source must be 'explicit' or 'implicit' (got {source!r})")

        feedback_id = _optional_id(raw.get("feedback_id"), "feedback_id") or uuid.uuid4().hex
        return {
            "feedback_id": feedback_id,
            "prediction_id": prediction_id,
            "entity_id": entity_id,
            "timestamp": _utc_timestamp(raw.get("timestamp"), now),
            "kind": kind,
            "value": value,
            "text": text,
            "source": source,
            "user_id": _optional_id(raw.get("user_id"), "user_id"),
        }

    def _feedback_frame(self, events: list[dict[str, Any]]) -> pd.DataFrame:
        """Events as a frame in the user's column names (``feedback_columns``)."""
        dtypes = {"timestamp": "datetime64[ns, UTC]", "value": "float64"}
        names = self.settings.feedback_columns.source_names()
        return pd.DataFrame(
            {
                names[field]: pd.Series(
                    [e[field] for e in events], dtype=dtypes.get(field, "object")
                )
                for field in FEEDBACK_FIELDS
            }
        )


# --- checks ----------------------------------------------------------------------------------


def _check_unique_columns(frame: pd.DataFrame) -> None:
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"the frame has repeated column name(s) {_names(repeated)}")


def _check_ids(ids: pd.Series, name: str) -> None:
    """Every prediction id present, not blank and used once."""
    text = ids.astype("string").str.strip()
    blank = (text.isna() | (text == "").fillna(False)).to_numpy(dtype=bool)
    if blank.any():
        rows = blank.nonzero()[0].tolist()
        raise ValueError(
            f"prediction id column {name!r} is null or blank in {len(rows)} row(s): "
            f"rows {_values(rows)}"
        )
    repeated = ids[text.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(
            f"prediction id column {name!r} repeats id(s) within the batch: {_values(repeated)}"
        )


def _utc_column(values: pd.Series, name: str) -> pd.Series:
    """Timestamps parsed as the pipeline parses them, or ValueError naming the bad rows."""
    try:
        parsed = to_utc(values)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"timestamp column {name!r} cannot be read: {exc}") from None
    bad = parsed.isna().to_numpy(dtype=bool)
    if bad.any():
        rows = bad.nonzero()[0]
        examples = ", ".join(f"row {i}: {values.iloc[i]!r}" for i in rows[:_SHOWN])
        raise ValueError(
            f"timestamp column {name!r} has {len(rows)} missing or unparsable value(s) "
            f"({examples}); use datetimes or ISO 8601 strings"
        )
    return parsed


def _check_storable(frame: pd.DataFrame) -> None:
    """Fails before anything is written if a column cannot become Parquet (say, mixed types)."""
    try:
        pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValueError(f"the frame cannot be stored as Parquet: {exc}") from None


def _checked_value(kind: str, value: Any) -> float | None:
    """The value as a float, if the kind allows it."""
    if value is not None and (isinstance(value, str) or not isinstance(value, numbers.Real)):
        raise ValueError(f"value must be a number (got {value!r})")
    number = None if value is None or math.isnan(float(value)) else float(value)
    rule = VALUE_RULES.get(kind)
    if rule is None:
        return number
    how, bounds = rule
    if number is None:
        if how == "range_or_missing":  # comments: the text is the feedback, a value is optional
            return None
        raise ValueError(f"a {kind} needs a value (got {value!r})")
    if how == "in":
        allowed = tuple(float(b) for b in bounds)  # type: ignore[union-attr]
        if number not in allowed:
            listed = " or ".join(f"{b:+g}" if min(allowed) < 0 else f"{b:g}" for b in allowed)
            raise ValueError(f"a {kind} value must be {listed} (got {value!r})")
    else:
        low, high = (float(b) for b in bounds)  # type: ignore[union-attr]
        if not low <= number <= high:
            span = f"at least {low:g}" if math.isinf(high) else f"between {low:g} and {high:g}"
            raise ValueError(f"a {kind} value must be {span} (got {value!r})")
    return number


def _optional_id(value: Any, name: str) -> str | None:
    """An id or other short string; integers are accepted and written as text."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string (got {type(value).__name__} {value!r})")
    if not value.strip():
        raise ValueError(f"{name} is blank; leave it out instead")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string (got {type(value).__name__} {value!r})")
    return value


def _utc_timestamp(value: Any, now: pd.Timestamp) -> pd.Timestamp:
    """A datetime or ISO 8601 string as a UTC timestamp (naive ones are UTC); None is now."""
    if value is None:
        return now
    given = value
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"timestamp is not an ISO 8601 date-time (got {value!r})") from None
    if not isinstance(value, dt.datetime):
        raise ValueError(
            "timestamp must be a datetime or an ISO 8601 string "
            f"(got {type(value).__name__} {value!r})"
        )
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    try:
        return stamp.as_unit("ns")
    except (OverflowError, ValueError):
        raise ValueError(f"timestamp is out of range (got {given!r})") from None


def _cell(value: Any) -> Any:
    """A frame cell with every kind of missing value (None, NaN, NaT, NA) as None."""
    return None if pd.api.types.is_scalar(value) and pd.isna(value) else value


def _names(columns: Iterable[Hashable]) -> list[str]:
    return [str(c) for c in columns]


def _values(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_SHOWN])
    return shown + (f" (and {len(values) - _SHOWN} more)" if len(values) > _SHOWN else "")


# --- writing ---------------------------------------------------------------------------------


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _file_name() -> str:
    """A name no other writer can choose: the UTC time to the microsecond and a random uuid."""
    return f"client-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex}.parquet"


def _write_days(root: str, frame: pd.DataFrame, timestamps: pd.Series) -> list[str]:
    """Writes each UTC day's rows as a new file; removes this call's files if one write fails."""
    days = timestamps.dt.strftime("%Y-%m-%d")
    written: list[str] = []
    try:
        for day in sorted(days.unique()):
            path = f"{root}/date={day}/{_file_name()}"
            write_parquet(frame[(days == day).to_numpy()].reset_index(drop=True), path)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(Exception):
                fs, target = fsspec.core.url_to_fs(path)
                fs.rm(target)
        raise
    return written


# --- a default client ------------------------------------------------------------------------

_default: LandingClient | None = None
_default_lock = threading.Lock()


def default_client() -> LandingClient:
    """The client of the module-level functions, made with ``load_settings()`` on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LandingClient()
        return _default


def log_predictions(frame: pd.DataFrame) -> list[str]:
    """``LandingClient.log_predictions`` of the default client."""
    return default_client().log_predictions(frame)


def log_feedback(
    *,
    kind: str,
    value: float | None = None,
    prediction_id: str | None = None,
    entity_id: str | None = None,
    timestamp: dt.datetime | str | None = None,
    user_id: str | None = None,
    text: str | None = None,
    source: str | None = None,
    feedback_id: str | None = None,
) -> str:
    """``LandingClient.log_feedback`` of the default client."""
    return default_client().log_feedback(
        kind=kind,
        value=value,
        prediction_id=prediction_id,
        entity_id=entity_id,
        timestamp=timestamp,
        user_id=user_id,
        text=text,
        source=source,
        feedback_id=feedback_id,
    )


def log_feedback_batch(frame: pd.DataFrame) -> list[str]:
    """``LandingClient.log_feedback_batch`` of the default client."""
    return default_client().log_feedback_batch(frame)
