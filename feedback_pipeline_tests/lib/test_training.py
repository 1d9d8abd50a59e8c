"""The training rows, the time split, the dataset version and the fitted challenger.

The labeled predictions are synthetic, in the warehouse's shape (features under the demo settings'
names, categories as strings, ``label_status`` categorical), with a planted signal: class 1 is
likely when ``sessions_7d`` is high and the plan is ``pro``, unlikely on ``free``. A model that
learns it beats the majority rate by far on the later rows it never saw.
"""

import datetime as dt
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.lib.training import (
    ORIGINAL,
    dataset_version,
    fit,
    inputs,
    model_columns,
    scores,
    time_split,
    training_curve,
    training_rows,
    with_original,
)

STATUSES = ["labeled", "pending", "unlabeled_final", "imputed_negative"]
DAY = "2026-10-05"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # OpenMP threads of the boosting spin against each other on a small busy machine: one thread
    # fits these few thousand rows several times faster.
    with threadpool_limits(limits=1):
        yield


def _predictions(
    settings: Settings, n: int, seed: int, day: str = DAY, status: list[str] | None = None
) -> pd.DataFrame:
    """A day of labeled predictions with a planted signal."""
    rng = np.random.default_rng(seed)
    numeric, categorical = model_columns(settings)
    start = pd.Timestamp(day, tz="UTC")
    frame = pd.DataFrame(
        {
            "prediction_id": pd.array([f"{day}-{i}" for i in range(n)], dtype="string"),
            "model_version": pd.Categorical(rng.choice(["v1", "v2"], n)),
            "timestamp": start + pd.to_timedelta(np.sort(rng.uniform(0, 86_400, n)), unit="s"),
            "score": rng.uniform(0, 1, n),
        }
    )
    for column in numeric:
        frame[column] = rng.normal(0, 1, n)
    for column in categorical:
        values = settings.categorical_values[column]
        frame[column] = pd.array(rng.choice(values, n), dtype="string")
    logit = 2 * frame["sessions_7d"] + 2 * (frame["plan"] == "pro") - 2 * (frame["plan"] == "free")
    truth = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-3 * logit.to_numpy(dtype=float)))).astype(int)
    if status is None:
        status = list(rng.choice(STATUSES, n, p=[0.6, 0.2, 0.1, 0.1]))
    state = np.array(status)
    frame["label"] = np.where(
        state == "labeled", truth, np.where(state == "imputed_negative", 0.0, np.nan)
    ).astype(float)
    frame["label_status"] = pd.Categorical(state, categories=STATUSES)
    frame["feedback_delay_s"] = np.where(state == "labeled", rng.uniform(0, 5 * 86_400, n), np.nan)
    frame["as_of"] = start + pd.Timedelta(days=8)
    return frame


def _all_labeled(settings: Settings, n: int, seed: int, day: str = DAY) -> pd.DataFrame:
    return _predictions(settings, n, seed, day, status=["labeled"] * n)


def _accuracy(labels: pd.Series, probability: np.ndarray) -> float:
    return float(np.mean((probability >= 0.5) == labels.to_numpy(dtype=int)))


# --- training_rows ---------------------------------------------------------------------------


def test_only_labeled_and_imputed_negative_rows_are_kept_with_their_day(
    settings: Settings,
) -> None:
    numeric, categorical = model_columns(settings)
    first = _predictions(settings, 200, seed=1, day="2026-10-05")
    second = _predictions(settings, 150, seed=2, day="2026-10-06")

    # Given out of order: the rows come back day by day.
    rows = training_rows({"2026-10-06": second, "2026-10-05": first}, numeric + categorical)

    known = [
        frame[frame["label_status"].isin(["labeled", "imputed_negative"])]
        for frame in (first, second)
    ]
    assert rows["prediction_id"].tolist() == [
        *known[0]["prediction_id"],
        *known[1]["prediction_id"],
    ]
    assert rows["day"].tolist() == ["2026-10-05"] * len(known[0]) + ["2026-10-06"] * len(known[1])
    assert rows["label"].dtype == np.int8
    assert rows["label"].tolist() == [*known[0]["label"], *known[1]["label"]]
    # Imputed negatives are class 0.
    imputed = pd.concat(known, ignore_index=True)["label_status"] == "imputed_negative"
    assert imputed.sum() > 0 and (rows.loc[imputed.to_numpy(), "label"] == 0).all()
    assert rows.columns.tolist() == [
        "prediction_id",
        "model_version",
        "timestamp",
        "score",
        *numeric,
        *categorical,
        "label",
        "as_of",
        "day",
    ]
    # Categorical columns are stored as plain strings.
    assert rows["model_version"].dtype == object
    assert set(rows["model_version"]) == {"v1", "v2"}
    assert rows["tenure_days"].tolist() == pytest.approx(
        [*known[0]["tenure_days"], *known[1]["tenure_days"]]
    )


def test_training_rows_of_no_days_are_empty_with_the_columns() -> None:
    rows = training_rows({}, ["x"])

    assert len(rows) == 0
    assert rows.columns.tolist() == ["prediction_id", "day", "timestamp", "x", "label"]


def test_with_a_cutoff_only_labels_known_by_then_are_kept(settings: Settings) -> None:
    frame = _predictions(
        settings, 4, seed=0, status=["labeled", "labeled", "imputed_negative", "imputed_negative"]
    )
    day_start = pd.Timestamp(DAY, tz="UTC")
    frame["timestamp"] = [day_start, day_start, day_start, day_start + pd.Timedelta(days=2)]
    frame["feedback_delay_s"] = [3600.0, 3 * 86_400.0, np.nan, np.nan]
    cutoff = day_start + pd.Timedelta(days=1)

    rows = training_rows({DAY: frame}, [], cutoff=cutoff)
    windowed = training_rows(
        {DAY: frame}, [], cutoff=day_start + pd.Timedelta(days=8), label_window=dt.timedelta(days=7)
    )
    early = training_rows({DAY: frame}, [], cutoff=cutoff, label_window=dt.timedelta(days=7))

    ids = frame["prediction_id"].tolist()
    # The label three days late is unknown at the cutoff; imputed labels stay without a window.
    assert rows["prediction_id"].tolist() == [ids[0], ids[2], ids[3]]
    # Eight days on, every label has arrived and the first three windows have passed.
    assert windowed["prediction_id"].tolist() == ids[:3]
    # A day on, no imputed label's seven-day window has passed.
    assert early["prediction_id"].tolist() == [ids[0]]


# --- with_original ---------------------------------------------------------------------------


def test_with_original_rejects_missing_columns_naming_them() -> None:
    original = pd.DataFrame({"a": [1.0], "c": [2.0]})

    with pytest.raises(ValueError, match=re.escape("lacks the columns ['b', 'label']")):
        with_original(pd.DataFrame(), original, ["a", "b"])


def test_with_original_puts_the_original_rows_first_and_always_in_training() -> None:
    logged = pd.DataFrame(
        {
            "prediction_id": ["p1", "p2"],
            "timestamp": pd.to_datetime(["2026-10-05 10:00", "2026-10-05 11:00"], utc=True),
            "a": [0.5, 0.6],
            "label": np.array([1, 0], dtype="int8"),
            "day": [DAY, DAY],
        }
    )
    original = pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [1.0, 0.0, 1.0], "ignored": 7})

    rows = with_original(logged, original, ["a"])

    assert rows["day"].tolist() == [ORIGINAL] * 3 + [DAY, DAY]
    assert rows["a"].tolist() == [1.0, 2.0, 3.0, 0.5, 0.6]
    assert rows["label"].tolist() == [1, 0, 1, 1, 0]
    assert rows["label"].dtype == np.int8
    assert "ignored" not in rows
    assert rows["timestamp"].isna().tolist() == [True] * 3 + [False] * 2
    split = time_split(rows, 0.5)
    assert split.train["day"].tolist() == [ORIGINAL] * 3 + [DAY]
    assert split.holdout["prediction_id"].tolist() == ["p2"]


# --- dataset_version -------------------------------------------------------------------------


def test_dataset_version_is_stable_for_the_same_rows(settings: Settings) -> None:
    features = [*model_columns(settings)[0], *model_columns(settings)[1]]
    rows = training_rows({DAY: _predictions(settings, 100, seed=5)}, features)
    rebuilt = training_rows({DAY: _predictions(settings, 100, seed=5)}, features)

    version = dataset_version(rows)

    assert re.fullmatch(r"[0-9a-f]{12}", version)
    assert dataset_version(rebuilt) == version
    # The index is not content.
    assert dataset_version(rows.set_axis(rows.index + 1000)) == version


def test_dataset_version_changes_when_one_value_of_one_row_changes(settings: Settings) -> None:
    features = [*model_columns(settings)[0], *model_columns(settings)[1]]
    rows = training_rows({DAY: _predictions(settings, 100, seed=5)}, features)
    version = dataset_version(rows)

    labels = rows["label"].to_numpy().copy()
    labels[7] = 1 - labels[7]
    relabeled = rows.assign(label=labels)
    tenure = rows["tenure_days"].to_numpy().copy()
    tenure[3] += 1e-9
    moved = rows.assign(tenure_days=tenure)
    recategorized = rows.copy()
    recategorized.loc[0, "plan"] = "enterprise"

    versions = {dataset_version(f) for f in (relabeled, moved, recategorized, rows.iloc[1:])}
    assert len(versions) == 4
    assert version not in versions


# --- time_split ------------------------------------------------------------------------------


def _timed(minutes: list[float | None]) -> pd.DataFrame:
    start = pd.Timestamp("2026-10-05", tz="UTC")
    stamps = [start + pd.Timedelta(minutes=m) if m is not None else pd.NaT for m in minutes]
    return pd.DataFrame(
        {"timestamp": pd.Series(stamps, dtype="datetime64[ns, UTC]"), "row": range(len(minutes))}
    )


def test_time_split_holds_out_the_latest_share() -> None:
    rows = _timed([float(m) for m in [5, 0, 9, 1, 8, 2, 7, 3, 6, 4]])

    split = time_split(rows, 0.2)

    assert sorted(split.holdout["row"]) == [2, 4]  # minutes 9 and 8
    assert sorted(split.train["row"]) == [0, 1, 3, 5, 6, 7, 8, 9]
    assert split.holdout_from == pd.Timestamp("2026-10-05 00:08", tz="UTC")


def test_time_split_never_puts_one_moment_on_both_sides() -> None:
    # Half of six rows would split the three rows of minute 2: all of them are held out.
    rows = _timed([0, 1, 2, 2, 2, 3])

    split = time_split(rows, 0.5)

    assert sorted(split.holdout["row"]) == [2, 3, 4, 5]
    assert sorted(split.train["row"]) == [0, 1]
    assert split.train["timestamp"].max() < split.holdout["timestamp"].min()


def test_rows_without_a_timestamp_are_always_trained_on() -> None:
    rows = _timed([None, 0, 1, None, 2, 3, None])

    split = time_split(rows, 0.5)

    # The share is of the four timed rows.
    assert sorted(split.holdout["row"]) == [4, 5]
    assert sorted(split.train["row"]) == [0, 1, 2, 3, 6]


def test_without_any_timestamp_everything_is_trained_on() -> None:
    untimed = pd.DataFrame({"row": [0, 1, 2]})
    all_missing = _timed([None, None])

    for rows in (untimed, all_missing):
        split = time_split(rows, 0.2)
        assert split.train["row"].tolist() == rows["row"].tolist()
        assert len(split.holdout) == 0
        assert split.holdout_from is None


@hypothesis_settings(max_examples=80, deadline=None)
@given(
    minutes=st.lists(st.one_of(st.none(), st.integers(0, 20).map(float)), min_size=1, max_size=40),
    share=st.floats(0.01, 0.99),
)
def test_time_split_is_a_partition_with_the_holdout_strictly_later(
    minutes: list[float | None], share: float
) -> None:
    rows = _timed(minutes)
    n_timed = sum(m is not None for m in minutes)

    split = time_split(rows, share)

    assert sorted([*split.train["row"], *split.holdout["row"]]) == list(range(len(minutes)))
    assert split.holdout["timestamp"].notna().all()
    if n_timed:
        assert split.holdout_from == split.holdout["timestamp"].min()
        # At least the share is held out (more when the boundary moment has ties).
        assert len(split.holdout) >= n_timed - int(n_timed * (1 - share))
        train_times = split.train["timestamp"].dropna()
        assert not len(train_times) or train_times.max() < split.holdout_from
    else:
        assert len(split.holdout) == 0


# --- fit, scores, training_curve -------------------------------------------------------------


def test_fit_learns_the_planted_signal_and_beats_the_majority_on_later_rows(
    settings: Settings,
) -> None:
    days = {
        f"2026-10-0{i}": _all_labeled(settings, 600, seed=i, day=f"2026-10-0{i}")
        for i in range(1, 6)
    }
    rows = training_rows(days, [*model_columns(settings)[0], *model_columns(settings)[1]])
    split = time_split(rows, settings.training.holdout_share)

    model = fit(split.train, settings)
    probability = scores(model, split.holdout, settings)

    holdout = split.holdout["label"]
    majority = max(holdout.mean(), 1 - holdout.mean())
    assert len(split.holdout) == 600
    assert majority < 0.6
    assert _accuracy(holdout, probability) > majority + 0.2
    # The category is learned: pro customers score far above free ones.
    plan = split.holdout["plan"].to_numpy()
    assert probability[plan == "pro"].mean() > probability[plan == "free"].mean() + 0.4


def test_scores_of_unseen_categories_and_missing_values_are_probabilities(
    settings: Settings,
) -> None:
    model = fit(_all_labeled(settings, 1500, seed=7), settings)
    fresh = _all_labeled(settings, 4, seed=8)
    fresh["plan"] = pd.array(["enterprise", None, "pro", "free"], dtype="string")
    fresh.loc[2:3, "sessions_7d"] = np.nan
    fresh.loc[2:3, "tenure_days"] = np.nan
    fresh.loc[2, "device_class"] = "smartwatch"

    probability = scores(model, fresh, settings)

    assert probability.shape == (4,)
    assert np.isfinite(probability).all()
    assert ((probability > 0) & (probability < 1)).all()
    # An unseen category is treated as a missing one.
    same_but_missing = fresh.iloc[[0]].assign(plan=pd.array([None], dtype="string"))
    assert scores(model, same_but_missing, settings)[0] == pytest.approx(probability[0])


def test_scores_of_no_rows_are_empty(settings: Settings) -> None:
    model = fit(_all_labeled(settings, 500, seed=9), settings)

    assert scores(model, _all_labeled(settings, 0, seed=9), settings).shape == (0,)


def test_training_curve_has_a_finite_validation_loss_per_iteration(settings: Settings) -> None:
    model = fit(_all_labeled(settings, 1500, seed=10), settings)

    curve = training_curve(model)

    iterations = model.named_steps["model"].n_iter_
    assert curve.columns.tolist() == ["iteration", "train_loss", "validation_loss"]
    # One row before the first tree, then one per tree.
    assert curve["iteration"].tolist() == list(range(iterations + 1))
    assert 1 < iterations < settings.training.max_iter  # early stopping stopped it
    for column in ("train_loss", "validation_loss"):
        assert np.isfinite(curve[column]).all()
        assert (curve[column] > 0).all()
    # Log loss of a constant model of a balanced class is about log 2; learning lowers it.
    assert curve["validation_loss"].iloc[0] == pytest.approx(np.log(2), abs=0.05)
    assert curve["validation_loss"].min() < curve["validation_loss"].iloc[0] - 0.2
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]


def test_inputs_are_categories_as_strings_then_numbers_as_floats(settings: Settings) -> None:
    numeric, categorical = model_columns(settings)
    frame = _all_labeled(settings, 3, seed=11)
    frame["plan"] = pd.array(["pro", None, "free"], dtype="string")
    frame["orders_90d"] = pd.array([1, None, 3], dtype="Int64")

    out = inputs(frame, settings)

    assert out.columns.tolist() == [*categorical, *numeric]
    assert out["plan"].tolist() == ["pro", None, "free"]
    assert out["plan"].dtype == object
    assert (out[numeric].dtypes == "float64").all()
    assert out["orders_90d"].tolist()[0::2] == [1.0, 3.0]
    assert np.isnan(out["orders_90d"].iloc[1])
