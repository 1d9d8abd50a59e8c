"""The labeling queue: uncertainty, the budget over the strata, the ranking, the Label Studio files.

Uncertainty and the largest-remainder split are checked on numbers worked out by hand, then
hypothesis holds the split to its invariants. The queue is drawn from seeded days of predictions
in the warehouse's shape, and the written files are read back the way a labeling tool would:
the tasks as JSON, the labeling configuration as XML whose names must match the tasks'.
"""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib.labeling_queue import (
    QUEUE_COLUMNS,
    allocate,
    day_directory,
    select,
    tasks,
    uncertainty,
    within_quota,
    write,
)

STATUSES = ["labeled", "pending", "unlabeled_final", "imputed_negative"]
OPEN = ["pending", "unlabeled_final", "imputed_negative"]
STRATA = ["country", "platform"]


def _day(n: int, seed: int, status: list[str] | None = None) -> pd.DataFrame:
    """A day of labeled predictions: strata, a feature, scores, label statuses."""
    rng = np.random.default_rng(seed)
    if status is None:
        status = list(rng.choice(STATUSES, n, p=[0.3, 0.4, 0.2, 0.1]))
    return pd.DataFrame(
        {
            "prediction_id": pd.array([f"p{i:04d}" for i in range(n)], dtype="string"),
            "entity_id": pd.array([f"c{i % 50}" for i in range(n)], dtype="string"),
            "timestamp": pd.Timestamp("2026-10-05", tz="UTC")
            + pd.to_timedelta(rng.uniform(0, 86_400, n), unit="s"),
            "model_version": pd.Categorical(rng.choice(["v1", "v2"], n)),
            "score": rng.uniform(0, 1, n).round(3),
            "country": pd.array(
                rng.choice(["US", "DE", "FR"], n, p=[0.6, 0.3, 0.1]), dtype="string"
            ),
            "platform": pd.Categorical(rng.choice(["ios", "web"], n)),
            "tenure_days": rng.integers(0, 1000, n).astype(float),
            "label_status": pd.Categorical(status, categories=STATUSES),
        }
    )


def _stratum(frame: pd.DataFrame) -> pd.Series:
    return frame["country"].astype(str) + "/" + frame["platform"].astype(str)


# --- uncertainty -----------------------------------------------------------------------------


def test_uncertainty_is_one_at_the_cutoff_and_zero_at_either_end() -> None:
    score = pd.Series([0.0, 0.25, 0.5, 0.75, 1.0])

    assert uncertainty(score, 0.5).tolist() == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_uncertainty_with_a_low_cutoff_is_one_there_and_zero_at_a_sure_one() -> None:
    score = pd.Series([0.3, 0.65, 1.0])

    assert uncertainty(score, 0.3).tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_uncertainty_with_a_low_cutoff_is_zero_at_a_sure_zero() -> None:
    # Each side scaled by its own width: with a cutoff of 0.3 a score of 0 is as sure as 1.
    score = pd.Series([0.0, 0.15, 0.3])

    assert uncertainty(score, 0.3).tolist() == pytest.approx([0.0, 0.5, 1.0])


# --- allocate --------------------------------------------------------------------------------


def test_allocate_splits_the_budget_by_largest_remainder() -> None:
    # Exact shares 2.0, 1.2 and 0.8: the floors give 3, the one left goes to the largest
    # remainder (0.8), not to the largest stratum.
    quota = allocate(pd.Series({"a": 5, "b": 3, "c": 2}), 4)

    assert quota.to_dict() == {"a": 2, "b": 1, "c": 1}


def test_allocate_drops_empty_strata_and_sums_to_the_budget() -> None:
    # One each first; the 4 left over sizes 9, 19, 29 are 0.63, 1.37 and 2.0: floors 0, 1, 2,
    # and the last one goes to a, the largest remainder.
    quota = allocate(pd.Series({"a": 10, "b": 20, "c": 0, "d": 30}), 7)

    assert quota.to_dict() == {"a": 2, "b": 2, "d": 3}


def test_allocate_breaks_a_tie_of_remainders_by_size_then_by_order() -> None:
    # Fewer rows than strata, so no one-each: shares 0.5, 1.5, 0.5, 0.5 all leave 0.5; the larger
    # stratum gets the first left over, then the first in order.
    assert allocate(pd.Series({"a": 1, "b": 3, "c": 1, "d": 1}), 3).to_dict() == {
        "a": 1,
        "b": 2,
        "c": 0,
        "d": 0,
    }
    # Shares 1.2, 0.4, 0.4: y and z tie on both, the first gets it.
    assert allocate(pd.Series({"x": 3, "y": 1, "z": 1}), 2).to_dict() == {"x": 1, "y": 1, "z": 0}


@pytest.mark.parametrize("budget", [60, 61, 1000])
def test_allocate_gives_everything_when_the_budget_covers_it(budget: int) -> None:
    quota = allocate(pd.Series({"a": 10, "b": 50, "c": 0}), budget)

    assert quota.to_dict() == {"a": 10, "b": 50}


def test_every_stratum_gets_a_share_when_the_budget_allows() -> None:
    # One row per stratum first when the budget allows: small strata are never starved.
    quota = allocate(pd.Series({"a": 990, "b": 5, "c": 5}), 10)

    assert (quota > 0).all()
    assert quota.sum() == 10


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 500), min_size=1, max_size=12),
    budget=st.integers(1, 800),
)
def test_allocate_sums_to_the_budget_and_never_exceeds_a_stratum(
    sizes: list[int], budget: int
) -> None:
    strata = pd.Series(sizes, index=[f"s{i:02d}" for i in range(len(sizes))])

    quota = allocate(strata, budget)

    nonempty = strata[strata > 0]
    assert quota.index.tolist() == nonempty.index.tolist()
    assert int(quota.sum()) == min(budget, int(strata.sum()))
    assert ((quota >= 0) & (quota <= nonempty)).all()
    # A larger stratum never gets fewer rows than a smaller one.
    for small in nonempty.index:
        for large in nonempty.index:
            if nonempty[small] < nonempty[large]:
                assert quota[small] <= quota[large]


# --- select ----------------------------------------------------------------------------------


def test_select_never_queues_a_labeled_row_however_uncertain() -> None:
    day = _day(400, seed=1)
    day.loc[day["label_status"] == "labeled", "score"] = 0.5  # the most uncertain of all

    queue = select(day, 1000, STRATA, 0.5, [])

    open_ids = day.loc[day["label_status"].isin(OPEN), "prediction_id"]
    assert sorted(queue["prediction_id"]) == sorted(open_ids)
    statuses = day.set_index("prediction_id").loc[queue["prediction_id"], "label_status"]
    assert set(statuses) == set(OPEN)


def test_select_takes_the_most_uncertain_of_each_stratum_within_its_quota() -> None:
    day = _day(600, seed=2)

    queue = select(day, 50, STRATA, 0.5, [])

    candidates = day[day["label_status"].isin(OPEN)].assign(stratum=_stratum)
    candidates["uncertainty"] = 1 - (candidates["score"] - 0.5).abs() / 0.5
    expected_quota = allocate(candidates.groupby("stratum").size(), 50)
    assert len(queue) == 50
    assert queue.groupby("stratum").size().to_dict() == expected_quota[expected_quota > 0].to_dict()
    for stratum, rows in candidates.groupby("stratum"):
        chosen = rows["prediction_id"].isin(queue["prediction_id"])
        if chosen.all():
            continue
        assert rows.loc[chosen, "uncertainty"].min() >= rows.loc[~chosen, "uncertainty"].max(), (
            stratum
        )


def test_select_spreads_the_budget_over_every_stratum_in_proportion() -> None:
    day = _day(600, seed=3)

    queue = select(day, 40, STRATA, 0.5, [])

    # Six strata (3 countries by 2 platforms); FR/ios, the smallest, holds 5% of the open rows.
    open_rows = day[day["label_status"].isin(OPEN)]
    share = _stratum(open_rows).value_counts(normalize=True)
    counts = queue["stratum"].value_counts()
    assert len(queue) == 40
    assert set(counts.index) == {f"{c}/{p}" for c in ("US", "DE", "FR") for p in ("ios", "web")}
    assert share.min() < 0.06
    # One each, then the rest in proportion: within a row and a half of the exact share.
    expected = (40 * share).to_dict()
    for stratum, n in counts.to_dict().items():
        assert n >= 1
        assert abs(n - expected[stratum]) < 1.5, stratum


def test_select_gives_every_open_row_when_the_budget_is_larger() -> None:
    day = _day(100, seed=4)

    queue = select(day, 10_000, STRATA, 0.5, [])

    assert len(queue) == int(day["label_status"].isin(OPEN).sum())


def test_select_ranks_one_to_n_by_falling_uncertainty_then_prediction_id() -> None:
    day = _day(300, seed=5)
    day.loc[:9, "score"] = 0.5  # ten ties at the top

    queue = select(day, 40, STRATA, 0.5, ["tenure_days"])

    assert queue["rank"].tolist() == list(range(1, 41))
    assert queue["uncertainty"].is_monotonic_decreasing
    tied = queue[queue["uncertainty"] == 1.0]
    open_ties = day.loc[:9][day.loc[:9, "label_status"].isin(OPEN)]
    assert tied["prediction_id"].tolist() == sorted(open_ties["prediction_id"])
    assert queue["uncertainty"].tolist() == pytest.approx(
        (1 - (queue["score"] - 0.5).abs() / 0.5).tolist()
    )


def test_select_carries_the_queue_columns_the_strata_and_the_extra_columns() -> None:
    day = _day(200, seed=6)

    queue = select(day, 20, STRATA, 0.5, ["tenure_days"])

    assert queue.columns.tolist() == [
        *QUEUE_COLUMNS,
        "score",
        "uncertainty",
        "country",
        "platform",
        "tenure_days",
    ]
    source = day.set_index("prediction_id").loc[queue["prediction_id"]]
    assert queue["tenure_days"].tolist() == source["tenure_days"].tolist()
    assert queue["stratum"].tolist() == _stratum(source).tolist()
    assert queue["model_version"].tolist() == source["model_version"].astype(str).tolist()


def test_extra_columns_the_day_lacks_are_fetched_for_the_chosen_rows_only() -> None:
    day = _day(200, seed=6)
    asked: list[tuple[list[int], list[str]]] = []

    def fetch(rows: np.ndarray, columns: list[str]) -> pd.DataFrame:
        asked.append((rows.tolist(), columns))
        return day.iloc[rows][columns].reset_index(drop=True)

    narrow = day.drop(columns="tenure_days")
    queue = select(narrow, 20, STRATA, 0.5, ["tenure_days"], fetch=fetch)

    pd.testing.assert_frame_equal(queue, select(day, 20, STRATA, 0.5, ["tenure_days"]))
    [(rows, columns)] = asked
    assert columns == ["tenure_days"] and len(rows) == 20
    assert set(day["prediction_id"].iloc[rows]) == set(queue["prediction_id"])


def test_a_column_that_is_both_a_stratum_and_an_extra_is_carried_once() -> None:
    # A column that is both a stratum and an extra is carried once.
    day = _day(200, seed=6)

    queue = select(day, 20, STRATA, 0.5, ["tenure_days", "country"])

    assert queue.columns.tolist() == [
        *QUEUE_COLUMNS,
        "score",
        "uncertainty",
        "country",
        "platform",
        "tenure_days",
    ]


def test_select_without_strata_is_one_stratum() -> None:
    day = _day(200, seed=7)

    queue = select(day, 15, [], 0.5, [])

    open_rows = day[day["label_status"].isin(OPEN)]
    top = 1 - (open_rows["score"] - 0.5).abs() / 0.5
    assert set(queue["stratum"]) == {"all"}
    assert len(queue) == 15
    assert queue["uncertainty"].min() >= top.sort_values(ascending=False).iloc[14]


def test_a_missing_stratum_value_is_named_missing() -> None:
    # Missing values are filled before the cast, so they read "(missing)", not "<NA>"/"nan".
    day = _day(4, seed=8, status=["pending"] * 4)
    day["country"] = pd.array([None, "US", "US", "DE"], dtype="string")
    day["platform"] = pd.Categorical([None, None, "ios", "web"])

    queue = select(day, 10, STRATA, 0.5, [])

    by_id = dict(zip(queue["prediction_id"], queue["stratum"], strict=True))
    assert by_id == {
        "p0000": "(missing)/(missing)",
        "p0001": "US/(missing)",
        "p0002": "US/ios",
        "p0003": "DE/web",
    }


def test_combinations_that_join_to_one_name_are_one_stratum() -> None:
    day = _day(4, seed=8, status=["pending"] * 4)
    day["country"] = ["a/b", "a", "a/b", "US"]
    day["platform"] = ["c", "b/c", "c", "ios"]

    queue = select(day, 10, STRATA, 0.5, [])

    assert sorted(queue["stratum"]) == ["US/ios", "a/b/c", "a/b/c", "a/b/c"]
    # One stratum of three: a budget of two gives it one row and "US/ios" the other.
    assert select(day, 2, STRATA, 0.5, [])["stratum"].value_counts().to_dict() == {
        "US/ios": 1,
        "a/b/c": 1,
    }


def test_numbers_and_categories_are_named_as_written() -> None:
    day = _day(3, seed=8, status=["pending"] * 3)
    day["country"] = pd.Categorical(["US", "DE", "US"], categories=["US", "DE", "FR"])
    day["platform"] = pd.array([1.5, None, 2.0], dtype="Float64")

    queue = select(day, 10, STRATA, 0.5, [])

    assert sorted(queue["stratum"]) == ["DE/(missing)", "US/1.5", "US/2.0"]


def test_many_strata_of_many_values_each_keep_their_own_names() -> None:
    # 1000 distinct values in each of seven columns: 1000**7 combinations, beyond 64-bit codes.
    day = _day(1000, seed=10, status=["pending"] * 1000)
    columns = [f"s{i}" for i in range(7)]
    for i, column in enumerate(columns):
        day[column] = [f"{column}v{(row * (i + 1)) % 1000}" for row in range(1000)]

    queue = select(day, 1000, columns, 0.5, [])

    expected = {
        f"p{row:04d}": "/".join(f"{c}v{(row * (i + 1)) % 1000}" for i, c in enumerate(columns))
        for row in range(1000)
    }
    assert dict(zip(queue["prediction_id"], queue["stratum"], strict=True)) == expected


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 3), st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]))
        ),
        max_size=60,
    ),
    quotas=st.lists(st.integers(0, 12), min_size=4, max_size=4),
)
def test_within_quota_is_a_rank_within_the_quota_ties_at_the_lowest_rank(
    rows: list[tuple[int, float | None]], quotas: list[int]
) -> None:
    stratum = np.array([r[0] for r in rows], dtype=np.intp)
    score = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)

    within = within_quota(score, stratum, np.array(quotas))

    # What it stands for: pandas' rank by falling score, ties at the lowest, missing unranked.
    frame = pd.DataFrame({"stratum": stratum, "score": score})
    rank = frame.groupby("stratum")["score"].rank(method="min", ascending=False)
    expected = (rank <= frame["stratum"].map(dict(enumerate(quotas)))).to_numpy()
    assert within.tolist() == expected.tolist()


# --- tasks and files -------------------------------------------------------------------------


def _queue() -> pd.DataFrame:
    day = _day(120, seed=9)
    day.loc[0, "tenure_days"] = np.nan
    day.loc[0, "label_status"] = "pending"
    day.loc[0, "score"] = 0.5  # first in the queue, with a missing feature
    return select(day, 20, STRATA, 0.5, ["tenure_days"])


def test_tasks_are_label_studio_imports_with_the_models_guess() -> None:
    queue = _queue()

    out = tasks(queue, 0.5, ["tenure_days"])

    # Strict JSON: no NaN, no timestamps or numpy values left.
    reloaded = json.loads(json.dumps(out, allow_nan=False))
    assert reloaded == out
    assert len(out) == len(queue)
    for task, row in zip(out, queue.to_dict(orient="records"), strict=True):
        assert set(task) == {"data", "predictions"}
        (prediction,) = task["predictions"]
        (result,) = prediction["result"]
        guess = "positive" if row["score"] >= 0.5 else "negative"
        assert result == {
            "from_name": "label",
            "to_name": "prediction",
            "type": "choices",
            "value": {"choices": [guess]},
        }
        assert prediction["score"] == row["score"]
        assert prediction["model_version"] == row["model_version"]
        assert task["data"]["prediction_id"] == row["prediction_id"]
        assert task["data"]["timestamp"] == row["timestamp"].isoformat()
    first = out[0]["data"]
    assert first["rank"] == 1
    assert first["tenure_days"] is None
    assert first["summary"] == "tenure_days=None"
    assert out[1]["data"]["summary"] == f"tenure_days={queue['tenure_days'].iloc[1]}"


def test_the_guess_follows_the_cutoff() -> None:
    queue = _queue()

    low = tasks(queue, 0.1, [])
    guesses = [t["predictions"][0]["result"][0]["value"]["choices"] for t in low]

    assert guesses == [["positive"] if s >= 0.1 else ["negative"] for s in queue["score"]]
    assert all(t["data"]["summary"] == "" for t in low)


def test_write_creates_the_queue_the_tasks_and_a_config_that_names_them(tmp_path: Path) -> None:
    queue = _queue()
    directory = str(tmp_path / "labeling_queue" / "date=2026-10-05")

    paths = write(queue, directory, 0.5, ["tenure_days"])

    assert paths == {
        "csv": f"{directory}/queue.csv",
        "tasks": f"{directory}/tasks.json",
        "label_config": f"{directory}/label_config.xml",
    }
    csv = pd.read_csv(paths["csv"])
    assert csv.columns.tolist() == queue.columns.tolist()
    assert csv["prediction_id"].tolist() == queue["prediction_id"].tolist()
    assert csv["rank"].tolist() == list(range(1, 21))
    written = json.loads(Path(paths["tasks"]).read_text(encoding="utf-8"))
    assert written == tasks(queue, 0.5, ["tenure_days"])

    config = Path(paths["label_config"]).read_text(encoding="utf-8")
    root = ET.fromstring(config)
    choices = root.find("Choices")
    text = root.find("Text")
    assert choices is not None and text is not None
    results = [r for t in written for p in t["predictions"] for r in p["result"]]
    assert {r["from_name"] for r in results} == {choices.get("name")}
    assert {r["to_name"] for r in results} == {choices.get("toName")} == {text.get("name")}
    assert {r["type"] for r in results} == {choices.tag.lower()}
    offered = {c.get("value") for c in choices.findall("Choice")}
    assert (
        {v for r in results for v in r["value"]["choices"]}
        <= offered
        == {
            "positive",
            "negative",
        }
    )
    # Every $variable of the configuration is a key of each task's data.
    variables = set(re.findall(r"\$(\w+)", config))
    assert variables == {"score", "model_version", "summary"}
    assert all(variables <= set(t["data"]) for t in written)


def test_day_directory_is_a_date_partition_under_the_root(tmp_path: Path) -> None:
    assert day_directory(str(tmp_path), "2026-10-05") == str(tmp_path / "date=2026-10-05")
    assert day_directory("s3://bucket/queue", "2026-10-05") == "s3://bucket/queue/date=2026-10-05"
