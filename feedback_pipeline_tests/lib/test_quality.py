"""Feedback quality: suspicious users, contradictory feedback, biased label coverage.

Every scenario is hand-built so that the right answer is known: a bot among ordinary users, a user
whose binomial p-value sits between the corrected and uncorrected thresholds, slices whose share of
labels is a chosen multiple of their share of predictions. The last section runs the flags through
``label_predictions`` to check that excluded feedback really leaves the labels and counts.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from feedback_pipeline.lib.attribution import label_predictions
from feedback_pipeline.lib.quality import (
    USER_COLUMNS,
    contradictory,
    coverage_bias,
    flag_events,
    negative_judgements,
    suspicious_users,
)
from feedback_pipeline.lib.settings import (
    QualityFlag,
    Settings,
    default_settings_path,
    load_settings,
)

# Read once (YAML parsing is slow); each test works on its own copy.
_SHIPPED = load_settings(default_settings_path())

T0 = pd.Timestamp("2026-10-05 10:00", tz="UTC")
AFTER_ALL_WINDOWS = T0 + pd.Timedelta(days=30)


def _settings(**quality: object) -> Settings:
    """The shipped settings with some ``feedback_quality`` values replaced."""
    rules = _SHIPPED.feedback_quality.model_copy(update=quality)
    return _SHIPPED.model_copy(update={"feedback_quality": rules})


def _events(rows: list[tuple[object, str, float]]) -> pd.DataFrame:
    """Events from rows of (user_id, kind, value)."""
    users, kinds, values = zip(*rows, strict=True) if rows else ((), (), ())
    return pd.DataFrame(
        {
            "user_id": pd.array(list(users), dtype="string"),
            "kind": np.array(kinds, dtype=object),
            "value": np.array(values, dtype=float),
        }
    )


def _user(table: pd.DataFrame, user_id: str) -> pd.Series:
    rows = table[table["user_id"] == user_id]
    assert len(rows) == 1, f"{user_id} is in the table {len(rows)} times"
    return rows.iloc[0]


def _crowd(n_users: int = 2000, seed: int = 0) -> list[tuple[object, str, float]]:
    """Ordinary users: one to three thumbs or ratings each, half of them negative or so."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[object, str, float]] = []
    for user in range(n_users):
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.7:
                rows.append((f"u{user}", "thumb", float(rng.choice([-1.0, 1.0]))))
            else:
                rows.append((f"u{user}", "rating", float(rng.integers(1, 6))))
    return rows


BOT = [("bot", "thumb", -1.0)] * 400


@pytest.fixture(scope="module")
def crowd_with_bot() -> pd.DataFrame:
    return _events(_crowd() + BOT)


# --- negative_judgements ---------------------------------------------------------------------


def test_thumbs_and_ratings_judge_and_only_thumbs_down_and_ratings_up_to_two_are_negative() -> None:
    events = _events(
        [
            ("a", "thumb", -1.0),
            ("a", "thumb", 1.0),
            ("a", "rating", 2.0),
            ("a", "rating", 3.0),
            ("a", "rating", 1.0),
            ("a", "click", 0.0),  # implicit: never a judgement
            ("a", "label", 0.0),  # a label is not a judgement of the user's mood
            ("a", "thumb", np.nan),  # no value: not a judgement
        ]
    )

    judged, negative = negative_judgements(events)

    assert judged.tolist() == [True, True, True, True, True, False, False, False]
    assert (judged & negative).tolist() == [True, False, True, False, True, False, False, False]


# --- suspicious_users ------------------------------------------------------------------------


def test_a_bot_with_400_thumbs_down_among_ordinary_users_is_flagged_with_its_figures(
    crowd_with_bot: pd.DataFrame,
) -> None:
    table = suspicious_users(crowd_with_bot, _settings())

    bot = _user(table, "bot")
    assert bool(bot["flagged"])
    assert (bot["n_events"], bot["n_judgements"], bot["n_negative"]) == (400, 400, 400)
    assert bot["negative_share"] == 1.0
    # 400 is below the volume bar (about 150 times the median user), the negativity is not.
    assert bot["volume_z"] < 5.0
    assert bot["negativity_p"] < 1e-50
    assert "z-score" not in bot["reason"]
    assert "400 of 400 judgements negative" in bot["reason"]
    # Flagged users come first.
    assert table.iloc[0]["user_id"] == "bot"
    assert table.columns.tolist() == USER_COLUMNS


def test_ordinary_users_are_below_the_event_floor_and_never_judged(
    crowd_with_bot: pd.DataFrame,
) -> None:
    table = suspicious_users(crowd_with_bot, _settings())

    # Every ordinary user sends at most three events, far below the 20 of the shipped settings.
    assert table["user_id"].tolist() == ["bot"]


def test_ordinary_users_judged_with_a_low_floor_are_not_flagged_but_the_bot_is(
    crowd_with_bot: pd.DataFrame,
) -> None:
    table = suspicious_users(crowd_with_bot, _settings(min_user_events=2))

    assert len(table) > 1000  # the ordinary users with two or three events are judged now
    assert table.loc[table["flagged"].astype(bool), "user_id"].tolist() == ["bot"]
    ordinary = table[table["user_id"] != "bot"]
    assert (ordinary["reason"] == "").all()
    assert (ordinary["n_events"] <= 3).all()


def test_volume_and_base_rate_count_every_user_though_only_users_above_the_floor_are_listed():
    # A hundred users with one thumb up each, below the floor; one user with 30 thumbs down.
    rows = [(f"u{i}", "thumb", 1.0) for i in range(100)] + [("loud", "thumb", -1.0)] * 30
    table = suspicious_users(_events(rows), _settings(min_user_events=20))

    loud = _user(table, "loud")
    assert table["user_id"].tolist() == ["loud"]
    # Against the median judging user (one judgement; no spread, so the scale's floor of 1).
    assert loud["volume_z"] == pytest.approx(np.log1p(30) - np.log1p(1))
    assert loud["negativity_p"] == pytest.approx(stats.binom.sf(29, 30, 30 / 130))


def test_a_user_below_min_user_events_is_never_judged_even_if_all_negative() -> None:
    events = _events(_crowd(200) + [("grump", "thumb", -1.0)] * 19)

    table = suspicious_users(events, _settings(min_user_events=20))

    assert "grump" not in set(table["user_id"])
    assert table.empty
    assert table.columns.tolist() == USER_COLUMNS


def test_the_event_floor_is_inclusive() -> None:
    events = _events(_crowd(200) + [("grump", "thumb", -1.0)] * 20)

    table = suspicious_users(events, _settings(min_user_events=20))

    assert table["user_id"].tolist() == ["grump"]
    assert _user(table, "grump")["n_events"] == 20


def test_a_loud_user_with_ordinary_negativity_is_flagged_for_volume_only() -> None:
    loud = [("loud", "thumb", -1.0), ("loud", "thumb", 1.0)] * 500
    table = suspicious_users(_events(_crowd() + loud), _settings())

    row = _user(table, "loud")
    assert bool(row["flagged"])
    assert row["n_events"] == 1000
    assert row["negative_share"] == 0.5
    assert row["volume_z"] > 5.0
    assert row["negativity_p"] > 0.01
    assert "robust z-score" in row["reason"]
    assert f"{row['volume_z']:.1f}" in row["reason"]
    assert "negative" not in row["reason"]


def test_a_harsh_user_within_volume_is_flagged_for_negativity_only() -> None:
    harsh = [("harsh", "thumb", -1.0)] * 30
    # A volume threshold no one reaches isolates the negativity test.
    table = suspicious_users(_events(_crowd() + harsh), _settings(max_volume_z=1000.0))

    row = _user(table, "harsh")
    assert bool(row["flagged"])
    assert row["n_negative"] == 30
    assert row["negative_share"] == 1.0
    assert "30 of 30 judgements negative" in row["reason"]
    assert "z-score" not in row["reason"]


def test_a_user_whose_ratings_are_all_three_stars_is_not_negative() -> None:
    # Thirty neutral ratings: many events, none of them negative.
    neutral = [("neutral", "rating", 3.0)] * 30
    table = suspicious_users(_events(_crowd() + neutral), _settings(max_volume_z=1000.0))

    row = _user(table, "neutral")
    assert not bool(row["flagged"])
    assert (row["n_judgements"], row["n_negative"]) == (30, 0)
    assert row["negativity_p"] == 1.0  # P(at least 0 negatives) is certain
    assert row["reason"] == ""


def test_a_heavy_user_of_implicit_feedback_alone_is_never_judged() -> None:
    # Clicks grow with a user's traffic; a heavy user's hundreds of clicks are not a bot's.
    clicks = [("clicker", "click", 0.0)] * 300
    table = suspicious_users(_events(_crowd() + clicks), _settings())

    assert "clicker" not in set(table["user_id"])
    assert not table["flagged"].astype(bool).any()


def test_volume_z_is_the_log_event_count_against_the_median_with_a_floor_on_the_scale() -> None:
    # Five users with one event and one with twenty: the median absolute deviation is zero, so
    # the scale is its floor of one log unit.
    events = _events([(f"u{i}", "thumb", 1.0) for i in range(5)] + [("big", "thumb", 1.0)] * 20)

    row = _user(suspicious_users(events, _settings(min_user_events=20)), "big")

    assert row["volume_z"] == pytest.approx((math.log(21) - math.log(2)) / 1.0, abs=1e-12)


def test_volume_z_uses_the_median_absolute_deviation_when_it_is_wider_than_the_floor() -> None:
    counts = {"a": 1, "b": 3, "c": 10, "d": 30, "e": 100}
    events = _events([(u, "thumb", 1.0) for u, n in counts.items() for _ in range(n)])

    table = suspicious_users(events, _settings(min_user_events=2, max_volume_z=1000.0))

    log = np.log1p(np.array(list(counts.values()), dtype=float))
    median = np.median(log)
    scale = 1.4826 * np.median(np.abs(log - median))
    assert scale > 0.5
    for user, value in zip(counts, log, strict=True):
        if counts[user] >= 2:
            assert _user(table, user)["volume_z"] == pytest.approx((value - median) / scale)


def _bonferroni_day() -> pd.DataFrame:
    """Ten ordinary users of ten thumbs (half down) and a harsh one of forty (thirty down)."""
    rows = [(f"u{i}", "thumb", v) for i in range(10) for v in [-1.0, 1.0] * 5]
    rows += [("harsh", "thumb", -1.0)] * 30 + [("harsh", "thumb", 1.0)] * 10
    return _events(rows)


def test_negativity_p_is_the_binomial_tail_against_every_users_negative_share() -> None:
    # Ten users of ten thumbs, half down; one of forty, thirty down.
    table = suspicious_users(_bonferroni_day(), _settings(min_user_events=10, max_volume_z=1e3))

    base_rate = (50 + 30) / (100 + 40)
    row = _user(table, "harsh")
    assert row["negativity_p"] == pytest.approx(stats.binom.sf(29, 40, base_rate), rel=1e-12)
    assert row["negative_share"] == 0.75
    ordinary = _user(table, "u0")
    assert ordinary["negative_share"] == 0.5
    assert ordinary["negativity_p"] == pytest.approx(stats.binom.sf(4, 10, base_rate), rel=1e-12)


def test_bonferroni_the_same_harsh_user_is_flagged_alone_but_not_among_eleven_judged() -> None:
    events = _bonferroni_day()
    p = stats.binom.sf(29, 40, 80 / 140)
    alpha = 2 * p  # p < alpha / 1, but p > alpha / 11
    assert alpha / 11 < p < alpha < 1

    # Only the harsh user reaches 40 events: one user judged, threshold alpha.
    alone = suspicious_users(events, _settings(min_user_events=40, negativity_alpha=alpha))
    # Everyone reaches 10 events: eleven judged, threshold alpha / 11.
    crowd = suspicious_users(events, _settings(min_user_events=10, negativity_alpha=alpha))

    assert alone["user_id"].tolist() == ["harsh"]
    assert bool(_user(alone, "harsh")["flagged"])
    assert len(crowd) == 11
    assert _user(crowd, "harsh")["negativity_p"] == pytest.approx(p, rel=1e-12)
    assert not bool(_user(crowd, "harsh")["flagged"])
    assert not crowd["flagged"].astype(bool).any()


def test_the_same_harsh_user_is_not_flagged_when_alpha_is_tiny() -> None:
    events = _bonferroni_day()
    p = stats.binom.sf(29, 40, 80 / 140)

    table = suspicious_users(
        events, _settings(min_user_events=40, max_volume_z=1000.0, negativity_alpha=p / 2)
    )

    assert not bool(_user(table, "harsh")["flagged"])
    assert _user(table, "harsh")["reason"] == ""


def test_events_without_a_user_are_ignored() -> None:
    rows = _crowd(300) + [("harsh", "thumb", -1.0)] * 25
    anonymous = [(None, "thumb", -1.0)] * 500  # would move the base rate if counted
    settings = _settings(min_user_events=3)

    with_anonymous = suspicious_users(_events(rows + anonymous), settings)
    without = suspicious_users(_events(rows), settings)

    pd.testing.assert_frame_equal(with_anonymous, without)
    assert "<NA>" not in set(with_anonymous["user_id"])
    assert "None" not in set(with_anonymous["user_id"])


def test_object_user_ids_with_none_are_ignored_too() -> None:
    events = _events(_crowd(300) + [("harsh", "thumb", -1.0)] * 25)
    objects = events.assign(user_id=events["user_id"].astype(object))
    objects.loc[len(objects)] = [None, "thumb", -1.0]

    table = suspicious_users(objects, _settings(min_user_events=3))

    assert "None" not in set(table["user_id"])
    assert _user(table, "harsh")["n_events"] == 25


@pytest.mark.parametrize("seed", range(5))
def test_each_judged_users_counts_are_those_of_grouping_every_event_with_pandas(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    kinds = np.array(["thumb", "rating", "click", "dwell", "label"])
    kind = kinds[rng.choice(len(kinds), n, p=[0.3, 0.2, 0.3, 0.1, 0.1])]
    value = np.where(kind == "thumb", rng.choice([-1.0, 1.0], n), rng.integers(1, 6, n) * 1.0)
    value[rng.random(n) < 0.05] = np.nan  # a judgement without a value is no judgement
    # A few heavy users among many light ones, and events without a user.
    user = np.where(rng.random(n) < 0.5, rng.integers(0, 8, n), rng.integers(8, 2000, n))
    users = pd.array([f"u{u}" for u in user], dtype="string")
    users[rng.random(n) < 0.03] = pd.NA
    events = pd.DataFrame({"user_id": users, "kind": kind, "value": value})
    floor = int(rng.integers(2, 60))

    table = suspicious_users(events, _settings(min_user_events=floor)).set_index("user_id")

    known = events[events["user_id"].notna()]
    judged, negative = negative_judgements(known)
    want = (
        known.assign(judged=judged, negative=judged & negative)
        .groupby("user_id")
        .agg(
            n_events=("kind", "size"),
            n_judgements=("judged", "sum"),
            n_negative=("negative", "sum"),
        )
    )
    want = want[want["n_judgements"] >= floor]
    assert len(want) > 0
    assert sorted(table.index) == sorted(want.index)
    got = table.loc[want.index, ["n_events", "n_judgements", "n_negative"]]
    assert got.to_numpy().tolist() == want.to_numpy().tolist()
    assert all(str(got[c].dtype) == "int64" for c in got.columns)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([], id="no events"),
        pytest.param([(None, "thumb", -1.0)] * 50, id="no known user"),
    ],
)
def test_no_known_users_gives_an_empty_table_with_the_user_columns(rows: list[tuple]) -> None:
    table = suspicious_users(_events(rows), _settings())

    assert table.empty
    assert table.columns.tolist() == USER_COLUMNS


def test_users_are_sorted_flagged_first_then_by_event_count() -> None:
    rows = [("quiet", "thumb", 1.0)] * 20 + [("busy", "thumb", 1.0)] * 30
    rows += [("harsh", "thumb", -1.0)] * 25 + _crowd(500)

    table = suspicious_users(_events(rows), _settings(max_volume_z=1000.0))

    assert table["user_id"].tolist() == ["harsh", "busy", "quiet"]
    assert table["flagged"].astype(bool).tolist() == [True, False, False]


# --- flag_events -----------------------------------------------------------------------------


def test_events_of_flagged_users_are_marked_suspicious_and_the_rest_are_missing(
    crowd_with_bot: pd.DataFrame,
) -> None:
    events = pd.concat([crowd_with_bot, _events([(None, "thumb", -1.0)])], ignore_index=True)
    users = suspicious_users(events, _settings())

    flags = flag_events(events, users)

    assert isinstance(flags, pd.Categorical)
    assert flags.categories.tolist() == [QualityFlag.SUSPICIOUS_USER.value]
    is_bot = (events["user_id"] == "bot").fillna(False).to_numpy(dtype=bool)
    assert is_bot.sum() == 400
    assert (np.asarray(flags[is_bot]) == "suspicious_user").all()
    assert pd.isna(np.asarray(flags[~is_bot], dtype=object)).all()
    assert pd.isna(flags[-1])  # the event without a user


def test_events_of_judged_but_unflagged_users_are_not_marked() -> None:
    events = _events([("calm", "thumb", 1.0)] * 20 + [("calm", "thumb", -1.0)] * 20 + _crowd(300))
    users = suspicious_users(events, _settings(max_volume_z=1000.0))
    assert not bool(_user(users, "calm")["flagged"])

    flags = flag_events(events, users)

    assert pd.isna(np.asarray(flags, dtype=object)).all()


def test_no_judged_users_marks_no_event() -> None:
    events = _events([("a", "thumb", -1.0), (None, "thumb", -1.0)])

    flags = flag_events(events, pd.DataFrame(columns=USER_COLUMNS))

    assert len(flags) == 2
    assert pd.isna(np.asarray(flags, dtype=object)).all()
    assert flags.categories.tolist() == ["suspicious_user"]


# --- contradictory ---------------------------------------------------------------------------


def _disagree(**kinds: list[float]) -> bool:
    """Whether one prediction with these values per kind has contradictory feedback."""
    low = {k: np.array([min(v)]) for k, v in kinds.items()}
    high = {k: np.array([max(v)]) for k, v in kinds.items()}
    result = contradictory(low, high)
    assert result.shape == (1,)
    assert result.dtype == bool
    return bool(result[0])


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        pytest.param({"label": [0.0, 1.0]}, True, id="labels of both classes"),
        pytest.param({"correction": [0.0, 1.0]}, True, id="corrections of both classes"),
        pytest.param({"label": [1.0, 1.0]}, False, id="labels agree"),
        pytest.param({"thumb": [-1.0, 1.0]}, True, id="thumbs both ways"),
        pytest.param({"thumb": [1.0, 1.0]}, False, id="thumbs agree"),
        pytest.param({"rating": [1.0, 4.0]}, True, id="ratings three apart"),
        pytest.param({"rating": [1.0, 5.0]}, True, id="ratings four apart"),
        pytest.param({"rating": [2.0, 4.0]}, False, id="ratings exactly two apart"),
        pytest.param({"rating": [3.0, 5.0]}, False, id="ratings exactly two apart high"),
        pytest.param({"rating": [2.5, 5.0]}, False, id="ratings 2.5 apart"),
        pytest.param({"thumb": [1.0], "rating": [2.0]}, True, id="thumb up rating two"),
        pytest.param({"thumb": [1.0], "rating": [1.0]}, True, id="thumb up rating one"),
        pytest.param({"thumb": [1.0], "rating": [3.0]}, False, id="thumb up rating three"),
        pytest.param({"thumb": [-1.0], "rating": [4.0]}, True, id="thumb down rating four"),
        pytest.param({"thumb": [-1.0], "rating": [5.0]}, True, id="thumb down rating five"),
        pytest.param({"thumb": [-1.0], "rating": [3.0]}, False, id="thumb down rating three"),
        pytest.param(
            {"label": [1.0], "thumb": [1.0], "rating": [4.0, 5.0], "click": [0.0, 1.0]},
            False,
            id="consistent feedback",
        ),
        pytest.param({"click": [0.0, 1.0], "conversion": [0.0, 1.0]}, False, id="implicit only"),
        pytest.param({"dwell": [0.0, 500.0]}, False, id="dwell range"),
    ],
)
def test_contradictory_cases(kinds: dict[str, list[float]], expected: bool) -> None:
    assert _disagree(**kinds) is expected


def test_a_correction_against_a_label_is_not_a_contradiction_it_overrides_the_label() -> None:
    # Pins current behaviour: each label kind is compared with itself only, since a correction
    # exists to override a label; two corrections of both classes still contradict.
    assert _disagree(label=[1.0], correction=[0.0]) is False
    assert _disagree(label=[1.0], correction=[0.0, 1.0]) is True


def test_contradictory_is_elementwise_and_missing_kinds_never_contradict() -> None:
    nan = np.nan
    low = {
        "thumb": np.array([-1.0, nan, 1.0, nan, -1.0]),
        "rating": np.array([nan, 1.0, 1.0, nan, 4.0]),
        "label": np.array([nan, nan, nan, 0.0, nan]),
    }
    high = {
        "thumb": np.array([1.0, nan, 1.0, nan, -1.0]),
        "rating": np.array([nan, 4.0, 1.0, nan, 4.0]),
        "label": np.array([nan, nan, nan, 1.0, nan]),
    }

    result = contradictory(low, high)

    # thumbs both ways; ratings 3 apart; thumb up vs rating 1; labels of both classes;
    # thumb down vs rating 4.
    assert result.tolist() == [True, True, True, True, True]
    nothing = {"thumb": np.full(3, nan), "rating": np.full(3, nan)}
    assert contradictory(nothing, nothing).tolist() == [False, False, False]


def test_contradictory_of_no_kinds_is_empty() -> None:
    assert contradictory({}, {}).shape == (0,)


# --- coverage_bias ---------------------------------------------------------------------------


def _table(rows: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["model_version", "segment", "n_predictions", "n_labeled"]
    ).assign(accuracy=np.linspace(0.5, 0.9, len(rows)))


COVERAGE = [
    ("all", "all", 1000, 100),
    ("all", "country=US", 500, 90),  # 50% of predictions, 90% of labels
    ("all", "country=DE", 500, 10),
    ("v1", "all", 600, 60),  # 60% of predictions, 60% of labels: balanced
    ("v1", "country=US", 300, 30),
    ("v1", "country=DE", 300, 30),
    ("v2", "all", 400, 40),
    ("v2", "country=US", 200, 36),  # half of v2's predictions, 90% of v2's labels
    ("v2", "country=DE", 200, 4),
    ("v2", "platform=web", 40, 36),  # far over, but only 40 predictions: never judged
]


@pytest.fixture(scope="module")
def coverage() -> pd.DataFrame:
    return coverage_bias(_table(COVERAGE), _settings())


def _slice(table: pd.DataFrame, version: str, segment: str) -> pd.Series:
    rows = table[(table["model_version"] == version) & (table["segment"] == segment)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_segment_with_half_the_predictions_and_90_percent_of_labels_is_biased(
    coverage: pd.DataFrame,
) -> None:
    us, de = _slice(coverage, "all", "country=US"), _slice(coverage, "all", "country=DE")

    assert us["coverage_ratio"] == pytest.approx(1.8)
    assert bool(us["coverage_biased"])
    assert de["coverage_ratio"] == pytest.approx(0.2)
    assert bool(de["coverage_biased"])


def test_a_balanced_slice_has_ratio_one_and_is_not_biased(coverage: pd.DataFrame) -> None:
    for segment in ("country=US", "country=DE"):
        row = _slice(coverage, "v1", segment)
        assert row["coverage_ratio"] == pytest.approx(1.0)
        assert not bool(row["coverage_biased"])


def test_a_segment_compares_with_its_versions_total_not_the_days(coverage: pd.DataFrame) -> None:
    us = _slice(coverage, "v2", "country=US")

    # Against v2: (36/40) / (200/400) = 1.8. Against the day it would be (36/100)/(200/1000).
    assert us["coverage_ratio"] == pytest.approx(1.8)
    assert bool(us["coverage_biased"])


def test_version_rows_compare_with_the_day_total(coverage: pd.DataFrame) -> None:
    v1, v2 = _slice(coverage, "v1", "all"), _slice(coverage, "v2", "all")
    day = _slice(coverage, "all", "all")

    assert v1["coverage_ratio"] == pytest.approx((60 / 100) / (600 / 1000))
    assert v2["coverage_ratio"] == pytest.approx(1.0)
    assert day["coverage_ratio"] == pytest.approx(1.0)
    assert not bool(v1["coverage_biased"] or v2["coverage_biased"] or day["coverage_biased"])


def test_a_slice_below_min_coverage_rows_is_never_biased(coverage: pd.DataFrame) -> None:
    web = _slice(coverage, "v2", "platform=web")

    assert web["coverage_ratio"] == pytest.approx((36 / 40) / (40 / 400))  # 9
    assert not bool(web["coverage_biased"])
    # With a lower floor the same slice is judged, and biased.
    lowered = coverage_bias(_table(COVERAGE), _settings(min_coverage_rows=40))
    assert bool(_slice(lowered, "v2", "platform=web")["coverage_biased"])


def test_coverage_tolerance_is_the_allowed_distance_from_one() -> None:
    loose = coverage_bias(_table(COVERAGE), _settings(coverage_tolerance=0.9))
    tight = coverage_bias(_table(COVERAGE), _settings(coverage_tolerance=0.1))

    assert not bool(_slice(loose, "all", "country=US")["coverage_biased"])  # |1.8 - 1| <= 0.9
    assert not bool(_slice(loose, "all", "country=DE")["coverage_biased"])  # |0.2 - 1| <= 0.9
    assert bool(_slice(tight, "all", "country=US")["coverage_biased"])
    assert not bool(_slice(tight, "v1", "country=US")["coverage_biased"])


def test_a_parent_without_labels_gives_a_missing_ratio_and_no_bias() -> None:
    rows = [
        ("all", "all", 1000, 50),
        ("v1", "all", 500, 50),
        ("v3", "all", 500, 0),
        ("v3", "country=US", 300, 0),
        ("v3", "country=DE", 200, 0),
    ]

    table = coverage_bias(_table(rows), _settings())

    for segment in ("country=US", "country=DE"):
        row = _slice(table, "v3", segment)
        assert math.isnan(row["coverage_ratio"])
        assert not bool(row["coverage_biased"])
    # The version itself is compared with the day, which has labels: none of them are its.
    v3 = _slice(table, "v3", "all")
    assert v3["coverage_ratio"] == 0.0
    assert bool(v3["coverage_biased"])


def test_a_day_without_labels_has_no_ratio_anywhere() -> None:
    rows = [("all", "all", 1000, 0), ("v1", "all", 1000, 0), ("v1", "country=US", 500, 0)]

    table = coverage_bias(_table(rows), _settings())

    assert table["coverage_ratio"].isna().all()
    assert not table["coverage_biased"].any()


def test_coverage_bias_keeps_the_rows_and_columns_of_the_table(coverage: pd.DataFrame) -> None:
    original = _table(COVERAGE)

    assert coverage.columns.tolist() == [*original.columns, "coverage_ratio", "coverage_biased"]
    pd.testing.assert_frame_equal(coverage[original.columns], original)
    assert coverage["coverage_biased"].dtype == bool


# --- label_predictions leaves the excluded flags out -----------------------------------------


def _predictions(*ids: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction_id": np.array(ids, dtype=object),
            "entity_id": np.array([f"c{i}" for i in range(len(ids))], dtype=object),
            "timestamp": pd.DatetimeIndex([T0] * len(ids), dtype="datetime64[ns, UTC]"),
        }
    )


def _attributed(*rows: tuple[str, str, str, float, int, str | None]) -> pd.DataFrame:
    """Attributed events from (feedback_id, prediction_id, kind, value, hours after, user_id).

    Events of ``bot`` carry the ``suspicious_user`` flag.
    """
    fid, pid, kind, value, hours, user = (list(c) for c in zip(*rows, strict=True))
    flags = ["suspicious_user" if u == "bot" else None for u in user]
    return pd.DataFrame(
        {
            "feedback_id": np.array(fid, dtype=object),
            "prediction_id": np.array(pid, dtype=object),
            "entity_id": np.array(["c"] * len(fid), dtype=object),
            "timestamp": pd.DatetimeIndex(
                [T0 + pd.Timedelta(hours=h) for h in hours], dtype="datetime64[ns, UTC]"
            ),
            "kind": np.array(kind, dtype=object),
            "value": np.array(value, dtype=float),
            "target_prediction_id": np.array(pid, dtype=object),
            "status": np.array(["attributed"] * len(fid), dtype=object),
            "delay_s": np.array(hours, dtype=float) * 3600,
            "quality_flag": pd.Categorical(flags, categories=["suspicious_user"]),
            "user_id": np.array(user, dtype=object),
        }
    )


SPAMMED = _attributed(
    ("f1", "p1", "label", 1.0, 1, "bot"),
    ("f2", "p2", "label", 0.0, 1, "alice"),
    ("f3", "p2", "thumb", -1.0, 2, "bot"),
    ("f4", "p3", "thumb", 1.0, 1, "alice"),
    ("f5", "p3", "thumb", -1.0, 2, "bot"),
)


def _label(attributed: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    preds = _predictions("p1", "p2", "p3")
    labeled = label_predictions(preds, attributed, settings, AFTER_ALL_WINDOWS)
    return labeled.set_index("prediction_id")


def test_excluded_suspicious_events_neither_label_nor_count() -> None:
    settings = _settings(exclude=[QualityFlag.SUSPICIOUS_USER])

    labeled = _label(SPAMMED, settings)

    assert math.isnan(labeled.loc["p1", "label"])
    assert labeled.loc["p1", "label_status"] == "unlabeled_final"
    assert labeled["n_feedback"].tolist() == [0, 1, 1]
    assert labeled.loc["p2", "label"] == 0.0
    assert math.isnan(labeled.loc["p2", "thumb"])
    # Without the bot's thumb, p3 has one thumb up and nothing to contradict it.
    assert labeled.loc["p3", "thumb"] == 1.0
    assert not labeled["contradictory"].any()


def test_the_shipped_settings_exclude_suspicious_users() -> None:
    assert _label(SPAMMED, _SHIPPED)["n_feedback"].tolist() == [0, 1, 1]


def test_suspicious_events_count_when_nothing_is_excluded() -> None:
    labeled = _label(SPAMMED, _settings(exclude=[]))

    assert labeled.loc["p1", "label"] == 1.0
    assert labeled.loc["p1", "label_status"] == "labeled"
    assert labeled["n_feedback"].tolist() == [1, 2, 2]
    assert labeled.loc["p2", "thumb"] == -1.0
    # The bot's thumb down is the latest on p3, and it contradicts alice's thumb up.
    assert labeled.loc["p3", "thumb"] == -1.0
    assert labeled["contradictory"].tolist() == [False, False, True]


CONTRADICTED = _attributed(
    ("f1", "p1", "thumb", 1.0, 1, "alice"),
    ("f2", "p1", "thumb", -1.0, 2, "bob"),
    ("f3", "p1", "rating", 5.0, 3, "alice"),
    ("f4", "p1", "label", 1.0, 4, "alice"),
    ("f5", "p2", "thumb", 1.0, 1, "alice"),
    ("f6", "p2", "rating", 4.0, 2, "alice"),
)


def test_excluding_contradictory_feedback_drops_its_thumbs_and_ratings_but_flags_it() -> None:
    settings = _settings(exclude=[QualityFlag.CONTRADICTORY])

    labeled = _label(CONTRADICTED, settings)

    p1, p2 = labeled.loc["p1"], labeled.loc["p2"]
    assert bool(p1["contradictory"])
    assert math.isnan(p1["thumb"])
    assert math.isnan(p1["rating"])
    assert p1["label"] == 1.0  # the label is not a judgement: it stays
    assert p1["n_feedback"] == 4  # every event was still received
    assert not bool(p2["contradictory"])
    assert (p2["thumb"], p2["rating"]) == (1.0, 4.0)


def test_contradictory_feedback_is_flagged_but_kept_when_not_excluded() -> None:
    labeled = _label(CONTRADICTED, _settings(exclude=[]))

    p1 = labeled.loc["p1"]
    assert bool(p1["contradictory"])
    assert p1["thumb"] == -1.0  # the latest thumb, as the conflict rule says
    assert p1["rating"] == 5.0
    assert labeled["contradictory"].tolist() == [True, False, False]


def test_flags_from_suspicious_users_flow_into_labels_end_to_end(
    crowd_with_bot: pd.DataFrame,
) -> None:
    # The bot's 400 thumbs down all land on p1; three ordinary thumbs up land on p2.
    users = suspicious_users(crowd_with_bot, _settings())
    rows = [(f"b{i}", "p1", "thumb", -1.0, 1, "bot") for i in range(400)]
    rows += [(f"o{i}", "p2", "thumb", 1.0, 1, f"u{i}") for i in range(3)]
    attributed = _attributed(*rows)
    attributed["quality_flag"] = flag_events(attributed, users)

    labeled = _label(attributed, _settings())

    assert (attributed["quality_flag"] == "suspicious_user").sum() == 400
    assert labeled["n_feedback"].tolist() == [0, 3, 0]
    assert math.isnan(labeled.loc["p1", "thumb"])
    assert labeled.loc["p2", "thumb"] == 1.0
