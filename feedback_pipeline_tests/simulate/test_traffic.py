"""Tests of the synthetic traffic: determinism, shape, incidents and how feedback follows truth."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.lib.settings import FeedbackKind, load_settings
from feedback_pipeline.simulate.traffic import (
    COMMENTS_BAD,
    COMMENTS_GOOD,
    FEATURES,
    SimulationConfig,
    build_world,
    simulate_day,
)

START = dt.date(2026, 10, 1)
BOT = "u-bot-4242"
# Incidents placed early so a short run has a few days on each side; no covariate drift, so the
# accuracy change before/after the concept drift is the concept drift's alone.
CONCEPT_DAY = 3
LATENCY_DAY = 3
SPAM_DAYS = (1, 4)
INCIDENT_CONFIG = SimulationConfig(
    start_date=START,
    days=6,
    rows_per_day=3000,
    seed=3,
    covariate_drift_day=99,
    concept_drift_day=CONCEPT_DAY,
    latency_regression_day=LATENCY_DAY,
    latency_regression_version="v2",
    spam_days=SPAM_DAYS,
)


def run(config: SimulationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All days of ``config``: predictions and feedback, each row tagged with its day index."""
    world = build_world(config)
    predictions, feedback = [], []
    for index in range(config.days):
        day_predictions, day_feedback = simulate_day(config, world, index)
        predictions.append(day_predictions.assign(day=index))
        feedback.append(day_feedback.assign(day=index))
    return pd.concat(predictions, ignore_index=True), pd.concat(feedback, ignore_index=True)


@pytest.fixture(scope="module")
def traffic() -> tuple[pd.DataFrame, pd.DataFrame]:
    predictions, feedback = run(INCIDENT_CONFIG)
    predictions["correct"] = (predictions["score"] >= 0.5).astype(int) == predictions["true_label"]
    return predictions, feedback


@pytest.fixture(scope="module")
def predictions(traffic) -> pd.DataFrame:
    return traffic[0]


@pytest.fixture(scope="module")
def feedback(traffic) -> pd.DataFrame:
    return traffic[1]


def small(seed: int) -> SimulationConfig:
    return SimulationConfig(start_date=START, days=4, rows_per_day=600, seed=seed, spam_days=(2,))


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames():
    first_predictions, first_feedback = run(small(seed=21))
    second_predictions, second_feedback = run(small(seed=21))
    pd.testing.assert_frame_equal(first_predictions, second_predictions)
    pd.testing.assert_frame_equal(first_feedback, second_feedback)
    assert len(first_predictions) == 4 * 600


def test_different_seed_gives_different_frames():
    first_predictions, first_feedback = run(small(seed=21))
    other_predictions, other_feedback = run(small(seed=22))
    # Ids are derived from the date and the row number, so they coincide; the content does not.
    assert first_predictions["prediction_id"].equals(other_predictions["prediction_id"])
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(first_predictions, other_predictions)
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(first_feedback, other_feedback)
    assert not np.allclose(first_predictions["score"], other_predictions["score"])
    assert (first_predictions["entity_id"] != other_predictions["entity_id"]).mean() > 0.9


# --- shape ----------------------------------------------------------------------------------


def test_prediction_columns_features_and_categories(predictions, monkeypatch):
    monkeypatch.delenv("FEEDBACK_PIPELINE_SETTINGS", raising=False)
    settings = load_settings()
    cols = settings.inference_columns
    assert len(FEATURES) == 20
    assert cols.features == FEATURES
    for name in FEATURES:
        assert pd.api.types.is_float_dtype(predictions[name]), name
        assert predictions[name].notna().all(), name
    for name in cols.segments:
        assert set(predictions[name]) <= set(settings.segment_values[name]), name
    for name in cols.categorical_features:
        assert set(predictions[name]) <= set(settings.categorical_values[name]), name
    assert set(predictions["platform"]) == {"ios", "android", "web"}
    assert set(predictions["plan"]) == {"free", "plus", "pro"}
    assert set(predictions["device_class"]) == {"phone", "tablet", "desktop"}
    # Web users are always on desktop, app users never.
    web = predictions["platform"] == "web"
    assert (predictions.loc[web, "device_class"] == "desktop").all()
    assert (predictions.loc[~web, "device_class"] != "desktop").all()
    assert predictions["score"].between(0, 1).all()
    assert (predictions["latency_ms"] > 0).all()
    assert set(predictions["true_label"]) == {0, 1}
    assert (predictions["model_name"] == "conversion_propensity").all()
    assert predictions["prediction_id"].is_unique
    assert predictions["prediction_id"].iloc[0] == "p-20261001-0000000"
    assert predictions["entity_id"].str.fullmatch(r"c-\d{6}").all()
    # Timestamps are sorted within each day and fall on that day.
    for index, day in predictions.groupby("day"):
        assert day["timestamp"].is_monotonic_increasing
        assert (day["timestamp"].dt.date == INCIDENT_CONFIG.day(index)).all()


def test_versions_split_roughly_half_and_half(predictions):
    share = predictions["model_version"].value_counts(normalize=True)
    assert set(share.index) == {"v1", "v2"}
    assert share["v1"] == pytest.approx(0.5, abs=0.03)
    # The split is per customer: one customer always sees the same version.
    assert (predictions.groupby("entity_id")["model_version"].nunique() == 1).all()


def test_some_customers_are_very_active(predictions):
    day = predictions[predictions["day"] == 0]
    counts = day["entity_id"].value_counts()
    # Uniform over 6000 customers gives at most ~6 predictions to anyone in 3000; the Zipf-like
    # share of traffic gives the most active customer far more.
    assert counts.iloc[0] >= 0.01 * len(day)


# --- incidents ------------------------------------------------------------------------------


def test_concept_drift_lowers_accuracy_of_each_version(predictions):
    before = predictions[predictions["day"] < CONCEPT_DAY]
    after = predictions[predictions["day"] >= CONCEPT_DAY]
    acc_before = before.groupby("model_version")["correct"].mean()
    acc_after = after.groupby("model_version")["correct"].mean()
    for version in ("v1", "v2"):
        assert acc_before[version] > 0.75, version
        assert acc_after[version] <= acc_before[version] - 0.05, version
    # Before the drift v2 (closer to the true weights) is the better model.
    assert acc_before["v2"] > acc_before["v1"]


def test_latency_regression_slows_only_the_regressed_version(predictions):
    medians = (
        predictions.assign(after=predictions["day"] >= LATENCY_DAY)
        .groupby(["model_version", "after"])["latency_ms"]
        .median()
    )
    assert medians[("v2", True)] >= 2 * medians[("v2", False)]
    assert medians[("v1", True)] == pytest.approx(medians[("v1", False)], rel=0.2)
    # Before the regression v2 is the faster version (medians about 70 ms against 85 ms).
    assert medians[("v2", False)] == pytest.approx(70, rel=0.1)
    assert medians[("v1", False)] == pytest.approx(85, rel=0.1)


def test_spam_bot_appears_only_on_spam_days(feedback):
    bot = feedback[feedback["user_id"] == BOT]
    assert set(bot["day"]) == set(SPAM_DAYS)
    assert bot.groupby("day").size().to_dict() == {day: 400 for day in SPAM_DAYS}
    assert (bot["kind"] == "thumb").all()
    assert (bot["value"] == -1.0).all()
    assert bot["prediction_id"].notna().all()


# --- feedback -------------------------------------------------------------------------------


def test_every_kind_of_feedback_appears(feedback):
    assert set(feedback["kind"]) == {kind.value for kind in FeedbackKind}
    assert feedback["feedback_id"].is_unique
    explicit = {"label", "correction", "thumb", "rating", "comment"}
    assert (
        feedback["source"] == np.where(feedback["kind"].isin(explicit), "explicit", "implicit")
    ).all()
    # Behavioural events know the customer but not the prediction.
    implicit = feedback[feedback["source"] == "implicit"]
    assert implicit["prediction_id"].isna().all()
    assert feedback.loc[feedback["source"] == "explicit", "prediction_id"].notna().all()


def test_feedback_values_fit_their_kind(feedback):
    values = feedback.groupby("kind")["value"]
    assert set(values.get_group("label")) == {0.0, 1.0}
    assert set(values.get_group("thumb")) == {-1.0, 1.0}
    assert set(values.get_group("rating")) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(values.get_group("click")) == {0.0, 1.0}
    assert set(values.get_group("conversion")) == {1.0}
    assert (values.get_group("dwell") > 0).all()
    assert values.get_group("comment").isna().all()


def test_comment_rows_carry_text(feedback, predictions):
    comments = feedback[feedback["kind"] == "comment"]
    assert len(comments) > 50
    assert comments["text"].isin(COMMENTS_BAD + COMMENTS_GOOD).all()
    assert feedback.loc[feedback["kind"] != "comment", "text"].isna().all()
    # A wrong or slow prediction only ever draws a complaint.
    joined = comments.merge(predictions, on="prediction_id", suffixes=("", "_p"))
    assert len(joined) == len(comments)
    unhappy = ~joined["correct"] | (joined["latency_ms"] > 150)
    assert joined.loc[unhappy, "text"].isin(COMMENTS_BAD).all()
    assert joined.loc[~unhappy, "text"].isin(COMMENTS_GOOD).all()


def test_thumbs_up_more_often_on_correct_predictions(feedback, predictions):
    thumbs = feedback[(feedback["kind"] == "thumb") & (feedback["user_id"] != BOT)]
    joined = thumbs.merge(predictions[["prediction_id", "correct"]], on="prediction_id")
    assert len(joined) == len(thumbs)
    up_share = joined.groupby("correct")["value"].apply(lambda v: (v == 1).mean())
    assert up_share[True] == pytest.approx(0.85, abs=0.05)
    assert up_share[False] == pytest.approx(0.30, abs=0.07)
    assert up_share[True] - up_share[False] > 0.4


def test_ratings_higher_on_correct_predictions(feedback, predictions):
    ratings = feedback[feedback["kind"] == "rating"]
    joined = ratings.merge(predictions[["prediction_id", "correct"]], on="prediction_id")
    mean = joined.groupby("correct")["value"].mean()
    assert mean[True] > mean[False] + 1.0


def test_click_rate_falls_as_latency_rises(feedback, predictions):
    # Clicks carry no prediction id: join each one to the customer's latest prediction before it.
    clicks = feedback[feedback["kind"] == "click"].sort_values("timestamp")
    served = (
        predictions[["entity_id", "timestamp", "latency_ms"]]
        .rename(columns={"timestamp": "served_at"})
        .sort_values("served_at")
    )
    joined = pd.merge_asof(
        clicks,
        served,
        left_on="timestamp",
        right_on="served_at",
        by="entity_id",
        direction="backward",
    )
    assert joined["latency_ms"].notna().all()
    quartile = pd.qcut(joined["latency_ms"], 4, labels=False)
    rate = joined.groupby(quartile)["value"].mean()
    assert rate.is_monotonic_decreasing
    assert rate[0] >= rate[3] + 0.1
    # About 60% of predictions are impressions, each with one click row.
    assert len(clicks) / len(predictions) == pytest.approx(0.6, abs=0.03)


def test_label_feedback_covers_a_minority(feedback, predictions):
    labels = feedback[feedback["kind"] == "label"]
    coverage = labels["prediction_id"].nunique() / len(predictions)
    assert 0.20 <= coverage <= 0.50
    assert coverage == pytest.approx(INCIDENT_CONFIG.label_share, abs=0.03)
    # Labels tell the truth.
    joined = labels.merge(predictions[["prediction_id", "true_label"]], on="prediction_id")
    assert (joined["value"] == joined["true_label"]).all()


def test_some_labels_arrive_late(feedback, predictions):
    labels = feedback[feedback["kind"] == "label"]
    joined = labels.merge(
        predictions[["prediction_id", "timestamp"]], on="prediction_id", suffixes=("", "_served")
    )
    delay = joined["timestamp"] - joined["timestamp_served"]
    assert (delay > pd.Timedelta(0)).all()
    late = delay > pd.Timedelta(days=7)
    assert late.sum() >= 50
    assert 0.01 < late.mean() < 0.15
    assert delay.median() == pytest.approx(pd.Timedelta(days=1.5), rel=0.15)


def test_corrections_only_on_wrong_predictions(feedback, predictions):
    corrections = feedback[feedback["kind"] == "correction"]
    joined = corrections.merge(predictions, on="prediction_id", suffixes=("", "_p"))
    assert len(joined) == len(corrections) > 0
    assert (~joined["correct"]).all()
    assert (joined["value"] == joined["true_label"]).all()
