"""Feedback attributed to predictions, and predictions labeled by their feedback."""

import datetime as dt

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.monitoring.reports import begin_drift
from feedback_pipeline.defs.partitions import (
    REACH_INPUT_METADATA,
    by_partition,
    daily_partitions,
    feedback_reach,
    partition_day,
    prediction_reach,
)
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import privacy, storage
from feedback_pipeline.lib.attribution import (
    attribute_feedback,
    counts_by,
    day_maturity,
    feedback_counts,
    label_predictions,
    rows_within_parts,
)
from feedback_pipeline.lib.quality import flag_events, suspicious_users
from feedback_pipeline.lib.settings import QualityFlag
from feedback_pipeline.lib.storage import day_end

PREDICTION_KEYS = ["prediction_id", "entity_id", "timestamp"]
# What labeling reads of the attributed events of every day in reach.
LABELING_COLUMNS = [
    "feedback_id",
    "target_prediction_id",
    "timestamp",
    "kind",
    "value",
    "status",
    "delay_s",
    "quality_flag",
]
# Read where the day has them: days attributed by earlier versions lack them.
LABELING_OPTIONAL_COLUMNS = ["target_row"]
# What attribution reads of the day's events: the rest (text, sources, where each row came
# from) is neither used nor stored again, the attributed day extending the feedback day.
ATTRIBUTION_COLUMNS = [
    "feedback_id",
    "prediction_id",
    "entity_id",
    "timestamp",
    "kind",
    "value",
    "user_id",
]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="labeling",
    kinds={"pandas", "parquet"},
    # The day's events in their order, with what attribution found: only that is stored, beside
    # the feedback day's columns (``extends``: see ``storage.write_parquet``).
    metadata={"extends": "feedback_events", "extends_on": "feedback_id"},
    ins={
        "feedback_events": dg.AssetIn(metadata={"columns": ATTRIBUTION_COLUMNS}),
        "inference_log": dg.AssetIn(
            partition_mapping=prediction_reach,
            metadata={**REACH_INPUT_METADATA, "columns": PREDICTION_KEYS},
        ),
    },
)
def attributed_feedback(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    helper: Helper,
    feedback_events: pd.DataFrame,
    inference_log: object,
) -> dg.Output[pd.DataFrame]:
    """The day's feedback events, each with the prediction it counts for, or why none.

    First begins the day's drift reports on the spare core (``monitoring.reports.begin_drift``):
    the first step after ingestion, in nightly runs and in the re-runs of earlier days alike.
    """
    begin_drift(context, helper, pipeline)
    days = by_partition(context, "inference_log", inference_log)
    frames = [f[PREDICTION_KEYS] for f in days.values()]
    predictions = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_KEYS)
    )
    settings = pipeline.settings
    result = attribute_feedback(feedback_events, predictions, settings)
    # Each target's row in its own day's inference log, where labeling that day looks first.
    result["target_row"] = rows_within_parts(result["target_row"], [len(f) for f in frames])
    users = suspicious_users(feedback_events, settings)
    result["quality_flag"] = flag_events(result, users)
    flagged = users[users["flagged"].astype(bool)]
    if "user_id" in privacy.personal(settings):  # metadata and logs leave the pipeline
        named = privacy.values(flagged["user_id"], settings)
        flagged = flagged.assign(user_id=pd.Series(named, index=flagged.index, dtype=object))
    for user in flagged.head(5).itertuples():
        context.log.warning(f"suspicious feedback from user {user.user_id}: {user.reason}")
    counts = feedback_counts(result)
    return dg.Output(
        result,
        metadata={
            "events_in": len(feedback_events),
            **{f"events_{status}": n for status, n in counts.items()},
            "prediction_days_read": len(days),
            "events_by_kind_and_status": dg.MetadataValue.json(
                counts_by(result, ["kind", "status"])
            ),
            "users_judged": len(users),
            "suspicious_users": len(flagged),
            "events_from_suspicious_users": int(result["quality_flag"].notna().sum()),
            "suspicious_user_table": dg.MetadataValue.md(_user_table(flagged)),
            "suspicious_feedback_excluded": QualityFlag.SUSPICIOUS_USER
            in settings.feedback_quality.exclude,
        },
    )


def _user_table(flagged: pd.DataFrame) -> str:
    if flagged.empty:
        return "No suspicious users."
    lines = ["| user | events | negative share | why |", "|---|---|---|---|"]
    lines += [
        f"| {u.user_id} | {u.n_events} | {u.negative_share:.0%} | {u.reason} |"
        for u in flagged.head(20).itertuples()
    ]
    return "\n".join(lines)


# What labeling reads of the day's predictions; the labeled day stores its own columns beside
# the inference day's (``extends``: see ``storage.write_parquet``) and reads as both together.
LABELED_KEYS = ["prediction_id", "timestamp"]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="labeling",
    kinds={"pandas", "parquet"},
    metadata={"extends": "inference_log"},
    ins={
        "inference_log": dg.AssetIn(metadata={"columns": LABELED_KEYS}),
        "attributed_feedback": dg.AssetIn(
            partition_mapping=feedback_reach,
            metadata={
                **REACH_INPUT_METADATA,
                "columns": LABELING_COLUMNS,
                "optional_columns": LABELING_OPTIONAL_COLUMNS,
            },
        ),
    },
)
def labeled_predictions(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    inference_log: pd.DataFrame,
    attributed_feedback: object,
) -> dg.Output[pd.DataFrame]:
    """One row per prediction of the day with its label, label status and combined feedback.

    Stored as the labels alone, keyed by prediction id, beside the day's inference columns
    rather than a second copy of them (at 10M predictions, 0.1 GB instead of 0.8 GB, and a
    third of the step's time); every read of the day gives both, the inference day's first.
    """
    settings, day = pipeline.settings, partition_day(context)
    days = by_partition(context, "attributed_feedback", attributed_feedback)
    # What is known is what has been received: up to the end of the latest feedback day read.
    as_of = max([day_end(day)] + [day_end(dt.date.fromisoformat(k)) for k in days])
    events = storage.concat(list(days.values())) if days else None
    if events is None:
        events = pd.DataFrame(columns=["status", "target_prediction_id", "timestamp", "kind"])
    labeled = label_predictions(inference_log, events, settings, as_of)
    labeled["as_of"] = as_of  # a new frame: no need for assign's copy of every column
    maturity = day_maturity(day_end(day), settings, as_of)
    status = labeled["label_status"].value_counts()
    contradictions = int(labeled["contradictory"].sum())
    if contradictions:
        context.log.info(f"{contradictions} predictions have feedback that contradicts itself")
    return dg.Output(
        labeled,
        metadata={
            "n_predictions": len(labeled),
            "n_labeled": int(status.get("labeled", 0)),
            "n_pending": int(status.get("pending", 0)),
            "label_coverage": float((labeled["label"].notna()).mean()) if len(labeled) else 0.0,
            "maturity": maturity,
            "as_of": as_of.isoformat(),
            "feedback_days_read": len(days),
            "n_contradictory": contradictions,
            "contradictory_feedback_excluded": QualityFlag.CONTRADICTORY
            in settings.feedback_quality.exclude,
        },
    )
