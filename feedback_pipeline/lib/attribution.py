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

import numpy as np
import pandas as pd

from feedback_pipeline.lib.settings import ConflictRule, MissingFeedbackPolicy, Settings

STATUSES = ("attributed", "late", "orphaned")
# Per-kind columns of a labeled prediction: kind -> column name.
KIND_COLUMNS = {
    "thumb": "thumb",
    "rating": "rating",
    "click": "clicked",
    "conversion": "converted",
    "dwell": "dwell_s",
    "comment": "comment_score",
}


def attribute_feedback(
    feedback: pd.DataFrame, predictions: pd.DataFrame, settings: Settings
) -> pd.DataFrame:
    """Finds each event's prediction and says whether it counts.

    Args:
        feedback: validated events of one day.
        predictions: ``prediction_id``, ``entity_id`` and ``timestamp`` of every prediction the
            events can reach (the longest window back from the end of the feedback day).
        settings: the attribution windows per kind.

    Returns:
        The events with ``target_prediction_id``, ``prediction_timestamp``, ``delay_s``,
        ``match`` (``prediction_id``, ``entity_asof`` or ``none``) and ``status``.
    """
    preds = predictions[["prediction_id", "entity_id", "timestamp"]].drop_duplicates(
        "prediction_id"
    )
    events = feedback.reset_index(drop=True)
    by_id = events["prediction_id"].notna()

    direct = events.loc[by_id, ["prediction_id"]].merge(
        preds.rename(columns={"timestamp": "prediction_timestamp"}),
        on="prediction_id",
        how="left",
        validate="many_to_one",
    )
    found = direct["prediction_timestamp"].notna()
    targets = [pd.Series(direct["prediction_id"].where(found).array, index=events.index[by_id])]
    times = [pd.Series(direct["prediction_timestamp"].array, index=events.index[by_id])]

    entity_rows = events.loc[~by_id, ["entity_id", "timestamp"]].reset_index()
    if len(entity_rows):
        matched = pd.merge_asof(
            entity_rows.sort_values("timestamp"),
            preds.rename(columns={"timestamp": "prediction_timestamp"}).sort_values(
                "prediction_timestamp"
            ),
            left_on="timestamp",
            right_on="prediction_timestamp",
            by="entity_id",
            direction="backward",
            allow_exact_matches=True,
        ).set_index("index")
        targets.append(matched["prediction_id"])
        times.append(matched["prediction_timestamp"])
    # Built whole, so an all-missing lookup cannot turn the timestamps into objects.
    target = pd.concat(targets).reindex(events.index).astype(object)
    when = pd.to_datetime(pd.concat(times).reindex(events.index), utc=True)

    window_s = events["kind"].map(
        {k.value: v.window.total_seconds() for k, v in settings.feedback_kinds.items()}
    )
    delay = (events["timestamp"] - when).dt.total_seconds()
    has_target = target.notna()
    status = np.select([~has_target, delay > window_s], ["orphaned", "late"], default="attributed")
    return events.assign(
        target_prediction_id=target,
        prediction_timestamp=when,
        delay_s=delay,
        match=np.select([~has_target, by_id], ["none", "prediction_id"], default="entity_asof"),
        status=status,
    )


def combine(events: pd.DataFrame, rule: ConflictRule) -> pd.Series:
    """Combines the events of one kind per prediction by the kind's conflict rule."""
    ordered = events.sort_values(["timestamp", "feedback_id"])
    grouped = ordered.groupby("target_prediction_id", sort=False)["value"]
    match rule:
        case ConflictRule.LATEST:
            return grouped.last()
        case ConflictRule.EARLIEST:
            return grouped.first()
        case ConflictRule.MEAN:
            return grouped.mean()
        case ConflictRule.MAX:
            return grouped.max()
        case ConflictRule.SUM:
            return grouped.sum()
        case ConflictRule.ANY:
            return grouped.max().gt(0).astype(float)


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
        settings: conflict rules, label kinds, the missing-feedback policy.
        as_of: what is known at this moment decides what is still pending.
    """
    events = attributed[
        (attributed["status"] == "attributed")
        & attributed["target_prediction_id"].isin(predictions["prediction_id"])
        & (attributed["timestamp"] <= as_of)
    ]
    out = predictions.set_index("prediction_id", drop=False)
    per_kind = {
        kind.value: combine(events[events["kind"] == kind.value], rule.conflict)
        for kind, rule in settings.feedback_kinds.items()
    }
    label = pd.Series(np.nan, index=out.index)
    source = pd.Series(None, index=out.index, dtype="object")
    delay = pd.Series(np.nan, index=out.index)
    for kind in reversed(settings.label_kinds):  # strongest kind last, so it overrides
        values = per_kind[kind.value].reindex(out.index)
        label = values.where(values.notna(), label)
        source = source.mask(values.notna(), kind.value)
        first_seen = events[events["kind"] == kind.value].groupby("target_prediction_id")["delay_s"]
        delay = first_seen.min().reindex(out.index).where(values.notna(), delay)

    window_over = out["timestamp"] + settings.label_window <= as_of
    status = np.select(
        [label.notna(), ~window_over], ["labeled", "pending"], default="unlabeled_final"
    )
    if settings.missing_feedback_policy == MissingFeedbackPolicy.NEGATIVE:
        imputed = status == "unlabeled_final"
        status = np.where(imputed, "imputed_negative", status)
        label = label.mask(imputed, 0.0)
        source = source.mask(imputed, "policy:negative")
    counts = events.groupby("target_prediction_id").size()
    result = out.assign(
        label=label,
        label_status=status,
        label_source=source,
        feedback_delay_s=delay,
        n_feedback=counts.reindex(out.index).fillna(0).astype(int),
        **{
            col: per_kind[kind].reindex(out.index) if kind in per_kind else np.nan
            for kind, col in KIND_COLUMNS.items()
        },
    )
    return result.reset_index(drop=True)


def day_maturity(day_end: pd.Timestamp, settings: Settings, as_of: pd.Timestamp) -> str:
    """``final`` once the longest window has passed for every prediction of the day."""
    return "final" if as_of >= day_end + settings.longest_window else "provisional"


def feedback_counts(attributed: pd.DataFrame) -> dict[str, int]:
    """Events per status, every status present (zeros included)."""
    counts = attributed["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}
