"""How feedback finds its prediction, and how a prediction's feedback becomes its label.

Two steps, each on one kind of partition:

1. ``attribute_feedback`` (per feedback day): an event with a ``prediction_id`` goes to that
   prediction; one with only an ``entity_id`` goes to the latest prediction for that entity at or
   before the event (an as-of join). Either way it counts only inside the attribution window of its
   kind, edge included; outside it is ``late``, and with no prediction to go to it is ``orphaned``.
   Each event goes to at most one prediction.
2. ``label_predictions`` (per prediction day): each prediction's events are combined per kind by
   the kind's conflict rule, the strongest label kind gives the label, and a prediction without
   one is ``pending`` until its label window has passed, then ``unlabeled_final`` (or
   ``imputed_negative`` under the ``negative`` policy).
"""

from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from feedback_pipeline.lib.quality import EXPLICIT_KINDS, contradictory
from feedback_pipeline.lib.schemas import TEXT, categorical
from feedback_pipeline.lib.settings import (
    ConflictRule,
    MissingFeedbackPolicy,
    QualityFlag,
    Settings,
)

STATUSES = ("attributed", "late", "orphaned")
MATCHES = ("prediction_id", "entity_asof", "none")
LABEL_STATUSES = ("labeled", "pending", "unlabeled_final", "imputed_negative")
# Per-kind columns of a labeled prediction: kind -> column name.
KIND_COLUMNS = {
    "thumb": "thumb",
    "rating": "rating",
    "click": "clicked",
    "conversion": "converted",
    "dwell": "dwell_s",
    "comment": "comment_score",
}
_TS = pl.Datetime("ns", "UTC")


def _polars(frame: pd.DataFrame, strings: list[str], times: list[str]) -> pl.DataFrame:
    """The columns the join needs, in polars (Arrow-backed strings cross without a copy)."""
    out = pl.from_pandas(frame[strings + times].reset_index(drop=True))
    return out.cast({**dict.fromkeys(strings, pl.String), **dict.fromkeys(times, _TS)})


def _texts(column: pl.Series) -> pd.Series:
    return pd.Series(column.to_arrow(), dtype=TEXT)


def attribute_feedback(
    feedback: pd.DataFrame, predictions: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """Finds each event's prediction and says whether it counts.

    The joins run in polars: an as-of join per entity stays linear in rows however skewed the
    entities are, where merging every event with every prediction of its entity does not.

    Args:
        feedback: validated events of one day.
        predictions: ``prediction_id``, ``entity_id`` and ``timestamp`` of every prediction the
            events can reach (the longest window back from the end of the feedback day).
        settings: the attribution windows per kind.

    Returns:
        The events in their order with
        ``target_prediction_id``, ``prediction_timestamp``,
        ``delay_s``, ``match`` (``prediction_id``, ``entity_asof`` or ``none``) and ``status``.
        Of several predictions of an entity at the same instant, the greatest id is chosen.
    """
    preds = _polars(predictions, ["prediction_id", "entity_id"], ["timestamp"]).rename(
        {"timestamp": "prediction_timestamp", "prediction_id": "target"}
    )
    events = _polars(feedback, ["prediction_id", "entity_id", "kind"], ["timestamp"])
    events = events.with_row_index("row")
    by_id = events.filter(pl.col("prediction_id").is_not_null())
    direct = by_id.join(
        preds.select("target", "prediction_timestamp"),
        left_on="prediction_id",
        right_on="target",
        how="left",
        coalesce=False,
    )
    if len(direct) > len(by_id):  # a prediction logged twice: its events still count once
        direct = direct.unique("row", keep="first", maintain_order=True)
    by_entity = events.filter(pl.col("prediction_id").is_null()).sort("timestamp")
    asof = by_entity.join_asof(
        preds.sort("prediction_timestamp", "target"),
        left_on="timestamp",
        right_on="prediction_timestamp",
        by="entity_id",
        strategy="backward",
        check_sortedness=False,
    )
    columns = ["row", "target", "prediction_timestamp"]
    found = pl.concat([direct.select(columns), asof.select(columns)]).sort("row")
    target = found.get_column("target")
    when = found.get_column("prediction_timestamp").to_numpy()
    stamp = events.get_column("timestamp").to_numpy()
    delay_ns = (stamp - when).astype("int64")
    window_ns = (
        events.get_column("kind")
        .replace_strict(
            {
                k.value: int(v.window.total_seconds() * 1e9)
                for k, v in settings.feedback_kinds.items()
            },
            default=None,
            return_dtype=pl.Int64,
        )
        .to_numpy()
    )
    has_target = target.is_not_null().to_numpy()
    # Feedback stamped before the prediction it names (beyond the allowed clock skew) cannot be
    # about it: it is orphaned, like feedback for no known prediction.
    skew_ns = int(settings.max_clock_skew.total_seconds() * 1e9)
    early = has_target & (delay_ns < -skew_ns)
    if early.any():
        has_target &= ~early
        target = pl.select(
            pl.when(pl.Series(early)).then(None).otherwise(target.cast(pl.String))
        ).to_series()
        when = np.where(early, np.datetime64("NaT"), when)
    named = events.get_column("prediction_id").is_not_null().to_numpy()
    status = np.select([~has_target, delay_ns > window_ns], [2, 1], default=0)
    match = np.select([~has_target, named], [2, 0], default=1)
    found = {
        "target_prediction_id": _texts(target),
        "prediction_timestamp": pd.DatetimeIndex(when).tz_localize("UTC"),
        "delay_s": np.where(has_target, delay_ns / 1e9, np.nan),
        "match": categorical(match, MATCHES),
        "status": categorical(status, STATUSES),
    }
    return _with_columns(feedback, found)


# How the events of one kind for one prediction (in time order) combine, per conflict rule.
_VALUE = pl.col("value")
_IN_TIME = _VALUE.sort_by("timestamp", "feedback_id")  # ties broken by id, in any input order
_RULES = {
    ConflictRule.LATEST: _IN_TIME.last(),
    ConflictRule.EARLIEST: _IN_TIME.first(),
    ConflictRule.MEAN: _VALUE.mean(),
    ConflictRule.MAX: _VALUE.max(),
    ConflictRule.SUM: _VALUE.sum(),
    ConflictRule.ANY: (_VALUE.max() > 0).cast(pl.Float64),
}


def combined_feedback(
    events: pl.DataFrame, n_predictions: int, settings: Settings
) -> dict[str, np.ndarray]:
    """Each prediction's events combined per kind by the kind's conflict rule.

    Args:
        events: attributed events with ``row`` (the position of their prediction), ``feedback_id``,
            ``timestamp``, ``kind``, ``value`` and ``delay_s``.
        n_predictions: how many predictions ``row`` counts.
        settings: the conflict rule of each kind, and the label kinds.

    Returns:
        Arrays of ``n_predictions``: ``n_feedback``; one per configured kind (missing where the
        prediction has no event of the kind); ``delay:<kind>`` per label kind, the delay of its
        first event; and ``contradictory``, whether its explicit feedback disagrees. Events
        without a value count in ``n_feedback`` but combine into nothing.
    """
    rows = events.get_column("row").to_numpy()
    out = {"n_feedback": np.bincount(rows, minlength=n_predictions)}
    groups = (
        events.filter(_VALUE.is_not_null())
        .group_by("kind", "row")
        .agg(
            delay=pl.col("delay_s").min(),
            low=_VALUE.min(),
            high=_VALUE.max(),
            **{rule.value: expr for rule, expr in _RULES.items()},
        )
    )
    label_kinds = {k.value for k in settings.label_kinds}
    by_kind = {str(k[0]): g for k, g in groups.partition_by("kind", as_dict=True).items()}
    for kind, rule in settings.feedback_kinds.items():
        found = by_kind.get(kind.value, groups.clear())
        at = found.get_column("row").to_numpy()
        wanted = [(kind.value, rule.conflict.value)]
        if kind.value in label_kinds:
            wanted.append((f"delay:{kind.value}", "delay"))
        for name, column in wanted:
            values = np.full(n_predictions, np.nan)
            values[at] = found.get_column(column).cast(pl.Float64).to_numpy()
            out[name] = values
    out["contradictory"] = _contradictions(by_kind, n_predictions)
    return out


def _contradictions(by_kind: dict[str, pl.DataFrame], n_predictions: int) -> np.ndarray:
    """Which predictions' explicit feedback disagrees: within a kind, or thumbs against ratings.

    Args:
        by_kind: per kind, ``row``, ``low`` and ``high`` of the predictions with events of it.
        n_predictions: how many predictions ``row`` counts.
    """
    out = np.zeros(n_predictions, dtype=bool)
    empty = pl.DataFrame(schema={"row": pl.UInt32, "low": pl.Float64, "high": pl.Float64})
    sides = {k: by_kind.get(k, empty).select("row", "low", "high") for k in EXPLICIT_KINDS}
    pairs = sides["thumb"].join(sides["rating"], on="row", suffix=":rating")
    tables = [({k: frame}, frame) for k, frame in sides.items()]
    rating = pairs.select("row", low="low:rating", high="high:rating")
    tables.append(({"thumb": pairs, "rating": rating}, pairs))
    for parts, frame in tables:
        if frame.is_empty():
            continue
        low = {k: t.get_column("low").cast(pl.Float64).to_numpy() for k, t in parts.items()}
        high = {k: t.get_column("high").cast(pl.Float64).to_numpy() for k, t in parts.items()}
        out[frame.get_column("row").to_numpy()[contradictory(low, high)]] = True
    return out


def label_predictions(
    predictions: pd.DataFrame,
    attributed: pd.DataFrame,
    settings: Settings,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """One row per prediction with its label, label status and combined feedback.

    Args:
        predictions: the validated inference log of one day.
        attributed: attributed events (any feedback days) whose target may be in ``predictions``;
            events received after ``as_of`` are ignored, so a re-run sees what was known then.
        settings: conflict rules, label kinds, the missing-feedback policy, and which quality
            flags to leave out (events of suspicious users; the thumbs and ratings of
            predictions whose feedback contradicts itself).
        as_of: what is known at this moment decides what is still pending.

    Returns:
        The predictions with their label and combined feedback.
    """
    excluded = settings.feedback_quality.exclude
    counted = (pl.col("status") == "attributed") & (pl.col("timestamp") <= as_of.to_pydatetime())
    flags = ["quality_flag"] if "quality_flag" in attributed else []
    if flags and QualityFlag.SUSPICIOUS_USER in excluded:
        counted &= pl.col("quality_flag").is_null()
    ids = _polars(predictions, ["prediction_id"], []).with_row_index("row")
    events = (
        _polars(
            attributed,
            ["target_prediction_id", "feedback_id", "kind", "status", *flags],
            ["timestamp"],
        )
        .hstack(
            pl.from_pandas(attributed[["value", "delay_s"]].astype(float).reset_index(drop=True))
        )
        .filter(counted)
        .join(ids, left_on="target_prediction_id", right_on="prediction_id", how="inner")
    )
    n = len(predictions)
    combined = combined_feedback(events, n, settings)
    kinds = [k.value for k in settings.feedback_kinds]
    label = np.full(n, np.nan)
    source = np.full(n, -1, dtype=np.int8)  # codes into the kinds, then the policy
    delay = np.full(n, np.nan)
    for kind in reversed(settings.label_kinds):  # strongest kind last, so it overrides
        values = combined[kind.value]
        known = ~np.isnan(values)
        label[known] = values[known]
        source[known] = kinds.index(kind.value)
        delay[known] = combined[f"delay:{kind.value}"][known]

    window_over = (predictions["timestamp"] + settings.label_window <= as_of).to_numpy()
    status = np.where(np.isnan(label), np.where(window_over, 2, 1), 0).astype(np.int8)
    if settings.missing_feedback_policy == MissingFeedbackPolicy.NEGATIVE:
        imputed = status == 2
        status[imputed] = 3
        label[imputed] = 0.0
        source[imputed] = len(kinds)
    disagree = combined["contradictory"]
    if QualityFlag.CONTRADICTORY in excluded:  # their judgements leave the feedback rates
        for kind in ("thumb", "rating"):
            if kind in combined:
                combined[kind][disagree] = np.nan
    columns = {
        "label": label,
        "label_status": categorical(status, LABEL_STATUSES),
        "label_source": categorical(source, [*kinds, "policy:negative"]),
        "feedback_delay_s": delay,
        "n_feedback": combined["n_feedback"],
        "contradictory": disagree,
        **{
            column: combined[kind] if kind in combined else np.full(n, np.nan)
            for kind, column in KIND_COLUMNS.items()
        },
    }
    return _with_columns(predictions, columns)


def _with_columns(frame: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """The frame (its columns shared, not copied) with new columns, on a 0..n-1 index.

    Setting columns one by one copies only the new ones; building one frame from all of them
    would merge the frame's many float columns into one block, copying them all.
    """
    moved = not frame.index.equals(pd.RangeIndex(len(frame)))
    out = frame.reset_index(drop=True) if moved else frame.copy(deep=False)
    for name, values in columns.items():
        out[name] = values
    return out


def day_maturity(day_end: pd.Timestamp, settings: Settings, as_of: pd.Timestamp) -> str:
    """``final`` once the longest window has passed for every prediction of the day."""
    return "final" if as_of >= day_end + settings.longest_window else "provisional"


def feedback_counts(attributed: pd.DataFrame) -> dict[str, int]:
    """Events per status, every status present (zeros included)."""
    counts = attributed["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}
