"""Why users complain: daily correlations, the lag view, correctness and latency at row level.

Every synthetic scenario plants its answer: a signal that is the metric plus a little noise, one
that is the metric a day later, one drawn independently, thumbs that depend on whether the model
was right, clicks that fall with latency. The last section simulates traffic with the simulator's
incidents (a concept drift, a latency regression), joins the feedback to the predictions here, and
checks that the incidents come out of the tables.
"""

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from feedback_pipeline.lib.correlation import (
    CORRECTNESS_COLUMNS,
    CORRELATION_COLUMNS,
    LATENCY_COLUMNS,
    METRICS,
    SIGNALS,
    by_correctness,
    by_latency,
    metric_correlations,
    strongest_lag,
)
from feedback_pipeline.simulate.traffic import SimulationConfig, build_world, simulate_day

START = dt.date(2026, 3, 1)


def _dates(n: int) -> list[str]:
    return [f"{START + dt.timedelta(days=i):%Y-%m-%d}" for i in range(n)]


def _daily(days: int = 30, seed: int = 0, version: str = "all", **columns: Any) -> pd.DataFrame:
    """A group's daily table: the given columns, dates from START."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {"date": _dates(days), "model_version": version, "segment": "all"}
    for name, values in columns.items():
        data[name] = values(rng, days) if callable(values) else values
    return pd.DataFrame(data)


def _one(table: pd.DataFrame, **where: object) -> pd.Series:
    rows = table
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, f"{where} matches {len(rows)} rows"
    return rows.iloc[0]


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    """30 days: thumbs follow accuracy, ratings are independent, negative feedback mirrors it."""
    rng = np.random.default_rng(42)
    accuracy = rng.normal(0.8, 0.05, 30)
    return _daily(
        accuracy=accuracy,
        thumbs_up_share=accuracy + rng.normal(0, 0.01, 30),
        mean_rating=rng.normal(4.0, 0.2, 30),
        negative_feedback_share=0.5 - accuracy + rng.normal(0, 0.01, 30),
    )


# --- metric_correlations ---------------------------------------------------------------------


def test_a_planted_correlation_is_positive_with_an_interval_above_zero(
    planted: pd.DataFrame,
) -> None:
    table = metric_correlations(planted)

    row = _one(table, signal="thumbs_up_share", metric="accuracy", lag=0)
    assert row["verdict"] == "positive"
    assert row["n"] == 30
    assert row["rho"] > 0.9
    assert row["p_adjusted"] < 0.05
    assert 0 < row["ci_low"] < row["rho"] < row["ci_high"] <= 1
    assert row["reason"] == ""


def test_an_independent_signal_shows_no_evidence(planted: pd.DataFrame) -> None:
    row = _one(metric_correlations(planted), signal="mean_rating", metric="accuracy", lag=0)

    assert row["verdict"] == "no evidence"
    assert row["p_adjusted"] >= 0.05
    assert row["ci_low"] < 0 < row["ci_high"]


def test_a_negative_relation_is_negative(planted: pd.DataFrame) -> None:
    row = _one(
        metric_correlations(planted), signal="negative_feedback_share", metric="accuracy", lag=0
    )

    assert row["verdict"] == "negative"
    assert row["rho"] < -0.9
    assert -1 <= row["ci_low"] < row["rho"] < row["ci_high"] < 0


def test_five_days_are_inconclusive_and_say_so_without_a_p_value(planted: pd.DataFrame) -> None:
    table = metric_correlations(planted.head(5))

    row = _one(table, signal="thumbs_up_share", metric="accuracy", lag=0)
    assert row["verdict"] == "inconclusive"
    assert row["reason"] == "5 days, fewer than 7"
    assert row["n"] == 5
    for column in ("rho", "p_value", "p_adjusted", "ci_low", "ci_high"):
        assert math.isnan(row[column])
    lag2 = _one(table, signal="thumbs_up_share", metric="accuracy", lag=2)
    assert lag2["reason"] == "3 days, fewer than 7"
    assert (table["verdict"] == "inconclusive").all()


def test_min_days_is_the_threshold(planted: pd.DataFrame) -> None:
    table = metric_correlations(planted.head(5), min_days=5, max_lag=0)

    row = _one(table, signal="thumbs_up_share", metric="accuracy", lag=0)
    assert row["verdict"] != "inconclusive"
    assert row["n"] == 5


def test_a_constant_series_is_inconclusive_and_named() -> None:
    daily = _daily(
        accuracy=0.9,
        latency_p95_ms=lambda rng, n: rng.normal(120, 10, n),
        thumbs_up_share=lambda rng, n: rng.normal(0.7, 0.05, n),
        click_rate=0.25,
    )

    table = metric_correlations(daily, max_lag=0)

    accuracy = _one(table, signal="thumbs_up_share", metric="accuracy")
    assert accuracy["verdict"] == "inconclusive"
    assert accuracy["reason"] == "accuracy does not vary over 30 days"
    assert math.isnan(accuracy["p_value"])
    clicks = _one(table, signal="click_rate", metric="latency_p95_ms")
    assert clicks["reason"] == "click_rate does not vary over 30 days"
    both_vary = _one(table, signal="thumbs_up_share", metric="latency_p95_ms")
    assert both_vary["verdict"] in {"positive", "negative", "no evidence"}


def test_missing_values_are_dropped_pairwise() -> None:
    rng = np.random.default_rng(3)
    accuracy = rng.normal(0.8, 0.05, 30)
    thumbs = accuracy + rng.normal(0, 0.01, 30)
    accuracy[[0, 1, 2]] = np.nan
    thumbs[[2, 3]] = np.nan

    table = metric_correlations(_daily(accuracy=accuracy, thumbs_up_share=thumbs), max_lag=0)

    row = _one(table, signal="thumbs_up_share", metric="accuracy")
    assert row["n"] == 26  # days 0-3 lack one side or both
    assert row["verdict"] == "positive"


def test_a_signal_one_day_behind_the_metric_is_strongest_at_lag_one() -> None:
    rng = np.random.default_rng(5)
    accuracy = rng.normal(0.8, 0.05, 31)
    clicks = np.r_[np.nan, accuracy[:-1]] + rng.normal(0, 0.005, 31)  # day t+1 echoes day t
    daily = _daily(31, accuracy=accuracy, click_rate=clicks)

    table = metric_correlations(daily)
    best = strongest_lag(table)

    row = _one(best, signal="click_rate", metric="accuracy")
    assert row["lag"] == 1
    assert row["verdict"] == "positive"
    assert row["rho"] > 0.9
    assert row["n"] == 30
    assert _one(table, signal="click_rate", metric="accuracy", lag=0)["rho"] < 0.6
    assert list(best.columns) == CORRELATION_COLUMNS


def test_lags_pair_calendar_dates_not_row_positions() -> None:
    rng = np.random.default_rng(6)
    accuracy = rng.normal(0.8, 0.05, 30)
    clicks = np.r_[np.nan, accuracy[:-1]] + rng.normal(0, 0.005, 30)
    daily = _daily(accuracy=accuracy, click_rate=clicks)
    # Days 10 and 20 have no row at all; the rows come in a shuffled order.
    gappy = daily.drop(index=[10, 20]).sample(frac=1.0, random_state=1)

    row = _one(metric_correlations(gappy), signal="click_rate", metric="accuracy", lag=1)

    # Metric days 0..28 with day t+1 present: 29, less t = 9, 10, 19, 20.
    assert row["n"] == 25
    assert row["rho"] > 0.9


def test_benjamini_hochberg_covers_every_conclusive_row_of_the_table(
    planted: pd.DataFrame,
) -> None:
    other = _daily(
        8,
        seed=9,
        version="v2",
        accuracy=lambda rng, n: rng.normal(0.7, 0.05, n),
        thumbs_up_share=lambda rng, n: rng.normal(0.6, 0.05, n),
    )
    table = metric_correlations(pd.concat([planted, other], ignore_index=True))

    conclusive = table[table["verdict"] != "inconclusive"]
    expected = stats.false_discovery_control(conclusive["p_value"].to_numpy(), method="bh")
    np.testing.assert_allclose(conclusive["p_adjusted"].to_numpy(), expected)
    assert (conclusive["p_adjusted"] >= conclusive["p_value"] - 1e-15).all()
    # v2's lag-2 pairs have 6 days: inconclusive, outside the correction.
    assert table.loc[table["verdict"] == "inconclusive", "p_adjusted"].isna().all()
    assert len(conclusive) < len(table)


def test_intervals_contain_rho_and_follow_the_bonett_wright_formula(
    planted: pd.DataFrame,
) -> None:
    table = metric_correlations(planted, alpha=0.1)

    conclusive = table[table["verdict"] != "inconclusive"]
    assert (
        (conclusive["ci_low"] <= conclusive["rho"]) & (conclusive["rho"] <= conclusive["ci_high"])
    ).all()
    row = _one(table, signal="mean_rating", metric="accuracy", lag=0)
    se = math.sqrt((1 + row["rho"] ** 2 / 2) / (row["n"] - 3))
    z = math.atanh(row["rho"])
    assert row["ci_low"] == pytest.approx(math.tanh(z - 1.6448536 * se))
    assert row["ci_high"] == pytest.approx(math.tanh(z + 1.6448536 * se))


def test_groups_are_tested_separately_in_a_stable_order(planted: pd.DataFrame) -> None:
    v1 = planted.assign(model_version="v1")
    v2 = planted.assign(model_version="v2", segment="country=US")
    daily = pd.concat([v2, planted, v1], ignore_index=True)

    table = metric_correlations(daily)
    shuffled = metric_correlations(daily.sample(frac=1.0, random_state=3))

    pd.testing.assert_frame_equal(table, shuffled)
    groups = table[["model_version", "segment"]].drop_duplicates().to_numpy().tolist()
    assert groups == [["all", "all"], ["v1", "all"], ["v2", "country=US"]]
    # Only present columns, in the order of SIGNALS and METRICS, lags ascending.
    first = table[(table["model_version"] == "all")]
    assert first["signal"].unique().tolist() == [
        s for s in SIGNALS if s in ("thumbs_up_share", "mean_rating", "negative_feedback_share")
    ]
    assert first["metric"].unique().tolist() == [m for m in METRICS if m == "accuracy"]
    assert first["lag"].tolist()[:3] == [0, 1, 2]
    assert len(table) == 3 * 3 * 1 * 3
    assert list(table.columns) == CORRELATION_COLUMNS


def test_two_rows_for_one_day_of_a_group_are_refused(planted: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="more than one row on 2026-03-01"):
        metric_correlations(pd.concat([planted, planted.head(1)]))


def test_strongest_lag_leaves_out_pairs_with_no_conclusive_lag(planted: pd.DataFrame) -> None:
    best = strongest_lag(metric_correlations(planted.head(8)))

    # With 8 days, lags 0 and 1 are tested (8 and 7 days), lag 2 (6 days) is not.
    assert set(best["lag"]) <= {0, 1}
    assert len(best) == 3
    assert strongest_lag(metric_correlations(planted.head(5))).empty


# --- by_correctness --------------------------------------------------------------------------


def _predictions(n: int, seed: int = 0) -> pd.DataFrame:
    """Predictions where thumbs and ratings depend on correctness and clicks do not."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    label = (rng.random(n) < np.where(score >= 0.5, 0.75, 0.25)).astype(float)
    correct = (score >= 0.5) == label
    thumb = np.where(rng.random(n) < np.where(correct, 0.85, 0.3), 1.0, -1.0)
    rating = np.clip(np.round(rng.normal(np.where(correct, 4.3, 2.4), 0.8)), 1, 5)
    return pd.DataFrame(
        {
            "score": score,
            "label": label,
            "model_version": np.where(rng.random(n) < 0.5, "v1", "v2"),
            "thumb": np.where(rng.random(n) < 0.4, thumb, np.nan),
            "rating": np.where(rng.random(n) < 0.3, rating, np.nan),
            "clicked": np.where(rng.random(n) < 0.6, (rng.random(n) < 0.3).astype(float), np.nan),
            "converted": np.nan,
            "comment_score": np.where(rng.random(n) < 0.2, rng.uniform(-1, 1, n), np.nan),
        }
    )


def test_thumbs_and_ratings_differ_by_correctness_and_clicks_do_not() -> None:
    table = by_correctness(_predictions(3000), cutoff=0.5)

    thumbs = _one(table, model_version="all", signal="thumbs_up")
    assert thumbs["verdict"] == "differs"
    assert thumbs["mean_correct"] == pytest.approx(0.85, abs=0.04)
    assert thumbs["mean_wrong"] == pytest.approx(0.3, abs=0.07)
    assert thumbs["difference"] == pytest.approx(thumbs["mean_correct"] - thumbs["mean_wrong"])
    assert _one(table, model_version="all", signal="rating")["difference"] > 1.5
    assert _one(table, model_version="v1", signal="rating")["verdict"] == "differs"
    assert _one(table, model_version="all", signal="negative")["verdict"] == "differs"
    assert _one(table, model_version="all", signal="negative")["difference"] < 0
    for signal in ("clicked", "comment_score"):
        assert _one(table, model_version="all", signal=signal)["verdict"] == "no evidence"
    converted = _one(table, model_version="all", signal="converted")
    assert converted["verdict"] == "inconclusive"
    assert converted["reason"] == "0 correct rows and 0 wrong rows with converted, fewer than 30"


def test_by_correctness_counts_only_labeled_rows_and_corrects_the_whole_table() -> None:
    rows = _predictions(3000)
    unlabeled = _predictions(1000, seed=1).assign(label=np.nan)

    table = by_correctness(pd.concat([rows, unlabeled], ignore_index=True), cutoff=0.5)

    thumbs = _one(table, model_version="all", signal="thumbs_up")
    assert thumbs["n_correct"] + thumbs["n_wrong"] == rows["thumb"].notna().sum()
    assert table["model_version"].unique().tolist() == ["all", "v1", "v2"]
    assert list(table.columns) == CORRECTNESS_COLUMNS
    conclusive = table[table["verdict"] != "inconclusive"]
    expected = stats.false_discovery_control(conclusive["p_value"].to_numpy(), method="bh")
    np.testing.assert_allclose(conclusive["p_adjusted"].to_numpy(), expected)


def test_by_correctness_uses_fisher_for_shares_and_mann_whitney_for_ratings() -> None:
    rows = _predictions(3000)
    table = by_correctness(rows, cutoff=0.5)
    correct = (rows["score"] >= 0.5).astype(float) == rows["label"]

    right, wrong = rows.loc[correct, "rating"].dropna(), rows.loc[~correct, "rating"].dropna()
    rating = _one(table, model_version="all", signal="rating")
    assert rating["p_value"] == pytest.approx(stats.mannwhitneyu(right, wrong).pvalue)
    up = rows["thumb"] > 0
    has = rows["thumb"].notna()
    cells = [
        [(up & correct).sum(), (~up & has & correct).sum()],
        [(up & ~correct).sum(), (~up & has & ~correct).sum()],
    ]
    thumbs = _one(table, model_version="all", signal="thumbs_up")
    assert thumbs["p_value"] == pytest.approx(stats.fisher_exact(cells)[1])


def test_few_rows_are_inconclusive_with_the_counts() -> None:
    rows = _predictions(60, seed=2).assign(thumb=1.0)

    table = by_correctness(rows, cutoff=0.5)

    thumbs = _one(table, model_version="all", signal="thumbs_up")
    assert thumbs["verdict"] == "inconclusive"
    assert math.isnan(thumbs["p_value"])
    assert math.isnan(thumbs["p_adjusted"])
    n_wrong = int(thumbs["n_wrong"])
    assert n_wrong < 30
    assert f"{n_wrong} wrong rows with thumbs_up, fewer than 30" in thumbs["reason"]
    assert (table["verdict"] == "inconclusive").all()


# --- by_latency ------------------------------------------------------------------------------


def _timed(n: int, seed: int = 0) -> pd.DataFrame:
    """Predictions whose clicks fall with latency; thumbs and ratings do not care."""
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(np.log(150), 0.5, n)
    return pd.DataFrame(
        {
            "model_version": np.where(rng.random(n) < 0.5, "v1", "v2"),
            "latency_ms": latency,
            "clicked": (rng.random(n) < np.clip(0.5 * np.exp(-(latency - 75) / 200), 0, 1)).astype(
                float
            ),
            "thumb": np.where(
                rng.random(n) < 0.3, np.where(rng.random(n) < 0.7, 1.0, -1.0), np.nan
            ),
            "rating": np.where(rng.random(n) < 0.2, rng.integers(1, 6, n).astype(float), np.nan),
        }
    )


def test_clicks_fall_with_latency_and_thumbs_do_not() -> None:
    buckets, tests = by_latency(_timed(4000))

    clicked = _one(tests, model_version="all", signal="clicked")
    assert clicked["verdict"] == "negative"
    assert clicked["rho"] < -0.1
    assert clicked["n"] == 4000
    assert _one(tests, model_version="v2", signal="clicked")["verdict"] == "negative"
    for signal in ("thumbs_up", "rating"):
        assert _one(tests, model_version="all", signal=signal)["verdict"] == "no evidence"
    everyone = buckets[buckets["model_version"] == "all"]
    assert everyone["bucket"].tolist() == [0, 1, 2, 3, 4]
    assert everyone["n"].sum() == 4000
    rates = everyone["click_rate"].to_numpy()
    assert rates[0] > rates[-1] + 0.1
    assert (
        everyone["latency_low"].to_numpy()[1:] == everyone["latency_high"].to_numpy()[:-1]
    ).all()
    assert list(tests.columns) == LATENCY_COLUMNS


def test_latency_buckets_per_version_and_counts_of_each_signal() -> None:
    rows = _timed(2000, seed=1)
    rows.loc[:9, "latency_ms"] = np.nan  # no latency: in no bucket

    buckets, tests = by_latency(rows, buckets=4)

    assert buckets["model_version"].unique().tolist() == ["all", "v1", "v2"]
    v1 = buckets[buckets["model_version"] == "v1"]
    timed_v1 = rows[(rows["model_version"] == "v1") & rows["latency_ms"].notna()]
    assert len(v1) == 4
    assert v1["n"].sum() == len(timed_v1)
    assert v1["n_thumbs"].sum() == timed_v1["thumb"].notna().sum()
    assert v1["n_ratings"].sum() == timed_v1["rating"].notna().sum()
    assert _one(tests, model_version="all", signal="clicked")["n"] == 1990
    conclusive = tests[tests["verdict"] != "inconclusive"]
    expected = stats.false_discovery_control(conclusive["p_value"].to_numpy(), method="bh")
    np.testing.assert_allclose(conclusive["p_adjusted"].to_numpy(), expected)


def test_few_rows_or_one_latency_are_inconclusive() -> None:
    small = _timed(20, seed=3)
    same = _timed(200, seed=4).assign(latency_ms=100.0)

    _, tests = by_latency(small)
    buckets, flat = by_latency(same)

    assert (tests["verdict"] == "inconclusive").all()
    clicked = _one(tests, model_version="all", signal="clicked")
    assert clicked["reason"] == "20 rows, fewer than 30"
    assert _one(flat, model_version="all", signal="clicked")["reason"] == (
        "latency_ms does not vary over 200 rows"
    )
    assert buckets[buckets["model_version"] == "all"]["n"].tolist() == [200]


# --- the simulator's incidents ---------------------------------------------------------------

SIMULATION = SimulationConfig(
    start_date=START,
    days=16,
    rows_per_day=3000,
    seed=11,
    covariate_drift_day=100,
    concept_drift_day=8,
    latency_regression_day=10,
    spam_days=(),
)


def _join(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per prediction with its feedback: by id where the event has it, else as of time.

    Clicks carry no prediction id: each goes to the entity's latest prediction before it.
    """
    by_id = feedback[feedback["prediction_id"].notna()]
    values = by_id.pivot_table(
        index="prediction_id", columns="kind", values="value", aggfunc="last"
    )
    rows = predictions.join(values, on="prediction_id")
    clicks = feedback[feedback["kind"] == "click"].sort_values("timestamp")
    matched = pd.merge_asof(
        clicks[["entity_id", "timestamp", "value"]],
        predictions[["entity_id", "timestamp", "prediction_id"]].sort_values("timestamp"),
        on="timestamp",
        by="entity_id",
        direction="backward",
    )
    clicked = matched.groupby("prediction_id")["value"].max()
    return rows.assign(
        clicked=rows["prediction_id"].map(clicked),
        correct=(rows["score"] >= 0.5).astype(int) == rows["true_label"],
    )


@pytest.fixture(scope="module")
def simulated() -> list[pd.DataFrame]:
    """The 16 days, each a frame of predictions joined to their feedback."""
    world = build_world(SIMULATION)
    return [_join(*simulate_day(SIMULATION, world, i)) for i in range(SIMULATION.days)]


def test_the_regressed_version_loses_clicks_across_latency_buckets(
    simulated: list[pd.DataFrame],
) -> None:
    day = simulated[SIMULATION.latency_regression_day + 2]

    buckets, tests = by_latency(day)

    regressed = SIMULATION.latency_regression_version
    clicked = _one(tests, model_version=regressed, signal="clicked")
    assert clicked["verdict"] == "negative"
    assert clicked["n"] > 500
    rates = buckets.loc[buckets["model_version"] == regressed, "click_rate"].to_numpy()
    assert rates[0] > rates[-1]
    # Thumbs follow correctness in the simulator, not latency.
    assert _one(tests, model_version=regressed, signal="thumbs_up")["verdict"] == "no evidence"


def test_daily_thumbs_and_ratings_follow_accuracy_through_a_concept_drift(
    simulated: list[pd.DataFrame],
) -> None:
    daily = pd.DataFrame(
        {
            "date": _dates(len(simulated)),
            "model_version": "all",
            "segment": "all",
            "accuracy": [day["correct"].mean() for day in simulated],
            "thumbs_up_share": [(day["thumb"].dropna() > 0).mean() for day in simulated],
            "mean_rating": [day["rating"].mean() for day in simulated],
        }
    )
    before = daily["accuracy"].iloc[: SIMULATION.concept_drift_day].mean()
    after = daily["accuracy"].iloc[SIMULATION.concept_drift_day :].mean()
    assert after < before - 0.05  # the drift really hurt the model

    table = metric_correlations(daily, max_lag=1)

    for signal in ("thumbs_up_share", "mean_rating"):
        row = _one(table, signal=signal, metric="accuracy", lag=0)
        assert row["verdict"] == "positive", row.to_dict()
        assert row["ci_low"] > 0


def test_simulated_thumbs_differ_between_right_and_wrong_predictions(
    simulated: list[pd.DataFrame],
) -> None:
    # The days before the drift, pooled: a single day has only a few dozen wrong thumbs.
    rows = pd.concat(simulated[: SIMULATION.concept_drift_day], ignore_index=True)
    assert 0.2 < rows["label"].notna().mean() < 0.5  # labels arrive for a minority

    table = by_correctness(rows, cutoff=0.5)

    for signal in ("thumbs_up", "rating", "negative"):
        assert _one(table, model_version="all", signal=signal)["verdict"] == "differs"
    assert _one(table, model_version="all", signal="thumbs_up")["difference"] > 0.3
    assert _one(table, model_version="all", signal="clicked")["verdict"] == "no evidence"
