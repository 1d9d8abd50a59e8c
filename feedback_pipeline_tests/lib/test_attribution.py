"""Attribution of feedback to predictions, and labels from attributed feedback."""

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib import attribution
from feedback_pipeline.lib.attribution import (
    attribute_feedback,
    day_maturity,
    feedback_counts,
    label_predictions,
    rows_within_parts,
)
from feedback_pipeline.lib.settings import (
    ConflictRule,
    FeedbackKind,
    FeedbackKindSettings,
    MissingFeedbackPolicy,
    Settings,
    default_settings_path,
    load_settings,
)

T0 = pd.Timestamp("2026-10-05 10:00", tz="UTC")
US = pd.Timedelta(microseconds=1)
FEEDBACK_COLUMNS = ["feedback_id", "prediction_id", "entity_id", "timestamp", "kind", "value"]


# Read once (YAML parsing is slow). Its cached windows are never touched: ``model_copy`` copies
# cached values, so each test works on its own copy, which computes them for itself.
_SHIPPED = load_settings(default_settings_path())


def _settings(**update: object) -> Settings:
    """A copy of the shipped settings with some values replaced."""
    return _SHIPPED.model_copy(update=update)


def _kinds(**windows: tuple[str, str]) -> dict[FeedbackKind, FeedbackKindSettings]:
    return {
        FeedbackKind(kind): FeedbackKindSettings(window=window, conflict=ConflictRule(rule))
        for kind, (window, rule) in windows.items()
    }


def _frame(rows: tuple[tuple, ...], columns: list[str]) -> pd.DataFrame:
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    data = {}
    for name, column in zip(columns, values, strict=True):
        if name == "timestamp":
            data[name] = pd.DatetimeIndex(column, dtype="datetime64[ns, UTC]")
        elif name == "value":
            data[name] = np.array(column, dtype=float)
        else:
            data[name] = np.array(column, dtype=object)
    return pd.DataFrame(data)


def _predictions(*rows: tuple[str, str, pd.Timestamp]) -> pd.DataFrame:
    return _frame(rows, ["prediction_id", "entity_id", "timestamp"])


def _feedback(*rows: tuple) -> pd.DataFrame:
    """Rows of (feedback_id, prediction_id, entity_id, timestamp, kind, value)."""
    return _frame(rows, FEEDBACK_COLUMNS)


def _one(result: pd.DataFrame, feedback_id: str) -> pd.Series:
    rows = result[result["feedback_id"] == feedback_id]
    assert len(rows) == 1
    return rows.iloc[0]


# --- attribute_feedback ----------------------------------------------------------------------


def test_feedback_with_prediction_id_goes_to_that_prediction() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c1", T0 + pd.Timedelta(hours=1)))
    events = _feedback(("f1", "p1", "c1", T0 + pd.Timedelta(hours=2), "label", 1.0))

    row = _one(attribute_feedback(events, preds, _settings()), "f1")

    assert row["target_prediction_id"] == "p1"
    assert row["prediction_timestamp"] == T0
    assert row["delay_s"] == 7200.0
    assert row["match"] == "prediction_id"
    assert row["status"] == "attributed"


def test_entity_only_feedback_goes_to_the_latest_earlier_prediction_of_the_entity() -> None:
    preds = _predictions(
        ("p1", "c1", T0),
        ("p2", "c1", T0 + pd.Timedelta(hours=4)),
        ("p3", "c2", T0 + pd.Timedelta(hours=1)),
    )
    events = _feedback(
        ("between", None, "c1", T0 + pd.Timedelta(hours=2), "label", 1.0),
        ("after", None, "c1", T0 + pd.Timedelta(hours=5), "label", 1.0),
        ("same_instant", None, "c1", T0 + pd.Timedelta(hours=4), "label", 0.0),
    )

    result = attribute_feedback(events, preds, _settings())

    between, after = _one(result, "between"), _one(result, "after")
    assert (between["target_prediction_id"], between["delay_s"]) == ("p1", 7200.0)
    assert (after["target_prediction_id"], after["delay_s"]) == ("p2", 3600.0)
    assert _one(result, "same_instant")["target_prediction_id"] == "p2"
    assert _one(result, "same_instant")["delay_s"] == 0.0
    assert set(result["match"]) == {"entity_asof"}
    assert set(result["status"]) == {"attributed"}


@pytest.mark.parametrize("by_id", [True, False])
def test_feedback_exactly_at_the_window_edge_counts_and_one_microsecond_later_is_late(
    by_id: bool,
) -> None:
    preds = _predictions(("p1", "c1", T0))
    pid = "p1" if by_id else None
    edge = T0 + pd.Timedelta(hours=1)  # the click window of the shipped settings
    events = _feedback(
        ("edge", pid, "c1", edge, "click", 1.0),
        ("past", pid, "c1", edge + US, "click", 1.0),
    )

    result = attribute_feedback(events, preds, _settings())

    edge_row, past_row = _one(result, "edge"), _one(result, "past")
    assert edge_row["delay_s"] == 3600.0
    assert edge_row["status"] == "attributed"
    assert past_row["delay_s"] == pytest.approx(3600.000001, abs=1e-9)
    assert past_row["status"] == "late"
    # A late event still names the prediction it was too late for.
    assert past_row["target_prediction_id"] == "p1"


def test_windows_are_per_kind() -> None:
    preds = _predictions(("p1", "c1", T0))
    at = T0 + pd.Timedelta(days=2, hours=12)
    events = _feedback(
        ("thumb", "p1", "c1", at, "thumb", 1.0),  # window 2d
        ("rating", "p1", "c1", at, "rating", 4.0),  # window 3d
    )

    result = attribute_feedback(events, preds, _settings())

    assert _one(result, "thumb")["status"] == "late"
    assert _one(result, "rating")["status"] == "attributed"


def test_kinds_as_categories_are_judged_as_kinds_as_text() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0))
    at = T0 + pd.Timedelta(days=2, hours=12)
    events = _feedback(
        ("f1", "p1", "c1", at, "thumb", 1.0),  # window 2d: late
        ("f2", "p1", "c1", at, "rating", 4.0),  # window 3d
        ("f3", "p2", "c2", _hours(1), "label", 1.0),
        ("f4", "p2", "c2", _hours(2), "unheard-of", 1.0),  # no window: never late, no label
        ("f5", "p2", "c2", _hours(3), None, 0.0),
    )
    # Categories as ingestion makes them: sorted, one of them no configured kind.
    as_categories = events.assign(kind=events["kind"].astype("category"))
    settings = _settings()

    text = attribute_feedback(events, preds, settings)
    categories = attribute_feedback(as_categories, preds, settings)

    columns = ["target_prediction_id", "delay_s", "match", "status", "target_row"]
    pd.testing.assert_frame_equal(categories[columns], text[columns])
    assert text["status"].tolist() == [
        "late",
        "attributed",
        "attributed",
        "attributed",
        "attributed",
    ]
    labeled = label_predictions(preds, categories, settings, AFTER_ALL_WINDOWS)
    pd.testing.assert_frame_equal(
        labeled, label_predictions(preds, text, settings, AFTER_ALL_WINDOWS)
    )
    by_id = labeled.set_index("prediction_id")
    assert np.isnan(by_id.loc["p1", "label"]) and by_id.loc["p2", "label"] == 1.0
    assert by_id.loc["p1", "rating"] == 4.0 and np.isnan(by_id.loc["p1", "thumb"])  # late thumb


def test_unknown_prediction_id_is_orphaned_even_when_the_entity_is_known() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("f1", "p404", "c1", T0 + pd.Timedelta(minutes=5), "label", 1.0))

    row = _one(attribute_feedback(events, preds, _settings()), "f1")

    assert row["status"] == "orphaned"
    assert row["match"] == "none"
    assert pd.isna(row["target_prediction_id"])
    assert pd.isna(row["prediction_timestamp"])
    assert np.isnan(row["delay_s"])


@pytest.mark.parametrize(
    ("entity", "at"),
    [("c1", T0 - US), ("c9", T0 + pd.Timedelta(minutes=1))],
    ids=["before_the_first_prediction", "entity_never_predicted"],
)
def test_entity_without_an_earlier_prediction_is_orphaned(entity: str, at: pd.Timestamp) -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("f1", None, entity, at, "label", 1.0))

    result = attribute_feedback(events, preds, _settings())

    row = _one(result, "f1")
    assert row["status"] == "orphaned"
    assert row["match"] == "none"
    assert pd.isna(row["target_prediction_id"])
    assert feedback_counts(result) == {"attributed": 0, "late": 0, "orphaned": 1}


# Regression: when every event of one lookup (by id, or by entity) found nothing, the timestamps
# became objects and the delay computation raised.
def test_unmatched_entity_event_among_matched_events_is_orphaned() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0))
    events = _feedback(
        ("f1", "p1", "c1", T0 + pd.Timedelta(hours=1), "label", 1.0),
        ("f2", "p2", "c2", T0 + pd.Timedelta(hours=1), "label", 0.0),
        ("f3", None, "c9", T0 + pd.Timedelta(hours=1), "thumb", 1.0),
    )

    result = attribute_feedback(events, preds, _settings())

    assert result["status"].tolist() == ["attributed", "attributed", "orphaned"]
    assert result["delay_s"].tolist()[:2] == [3600.0, 3600.0]


def test_two_events_with_unknown_prediction_ids_are_both_orphaned() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(
        ("f1", "p8", "c1", T0 + pd.Timedelta(minutes=5), "label", 1.0),
        ("f2", "p9", "c1", T0 + pd.Timedelta(minutes=5), "label", 1.0),
    )

    result = attribute_feedback(events, preds, _settings())

    assert result["status"].tolist() == ["orphaned", "orphaned"]
    assert feedback_counts(result) == {"attributed": 0, "late": 0, "orphaned": 2}


def test_each_event_maps_to_at_most_one_prediction() -> None:
    preds = _predictions(
        ("p1", "c1", T0),
        ("p1", "c1", T0),  # the same prediction logged twice
        ("p2", "c1", T0 + pd.Timedelta(hours=1)),
        ("p3", "c1", T0 + pd.Timedelta(hours=1)),  # two predictions of c1 at one instant
    )
    events = _feedback(
        ("f1", "p1", "c1", T0 + pd.Timedelta(minutes=30), "label", 1.0),
        ("f2", None, "c1", T0 + pd.Timedelta(hours=2), "label", 0.0),
        ("f3", None, "c1", T0 + pd.Timedelta(minutes=10), "thumb", 1.0),
    )

    result = attribute_feedback(events, preds, _settings())

    assert result["feedback_id"].tolist() == ["f1", "f2", "f3"]
    assert result["target_prediction_id"].tolist()[0] == "p1"
    assert result["target_prediction_id"].tolist()[1] in {"p2", "p3"}
    assert result["target_prediction_id"].tolist()[2] == "p1"
    assert feedback_counts(result) == {"attributed": 3, "late": 0, "orphaned": 0}


def test_attribution_keeps_the_event_columns() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("f1", "p1", "c1", T0 + pd.Timedelta(hours=1), "rating", 4.0))

    row = _one(attribute_feedback(events, preds, _settings()), "f1")

    assert (row["kind"], row["value"], row["entity_id"]) == ("rating", 4.0, "c1")


# --- label_predictions -----------------------------------------------------------------------


def _label(
    preds: pd.DataFrame, events: pd.DataFrame, settings: Settings, as_of: pd.Timestamp
) -> pd.DataFrame:
    attributed = attribute_feedback(events, preds, settings)
    return label_predictions(preds, attributed, settings, as_of).set_index("prediction_id")


def _hours(n: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=n)


AFTER_ALL_WINDOWS = T0 + pd.Timedelta(days=30)


def test_label_latest_event_wins() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(  # listed out of time order on purpose
        ("f2", "p1", "c1", _hours(3), "label", 0.0),
        ("f1", "p1", "c1", _hours(1), "label", 1.0),
    )

    row = _label(preds, events, _settings(), AFTER_ALL_WINDOWS).loc["p1"]

    assert row["label"] == 0.0
    assert row["label_status"] == "labeled"
    assert row["label_source"] == "label"
    assert row["feedback_delay_s"] == 3600.0
    assert row["n_feedback"] == 2


def test_rating_is_the_mean_click_is_any_thumb_is_the_latest() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0))
    events = _feedback(
        ("r1", "p1", "c1", _hours(1), "rating", 2.0),
        ("r2", "p1", "c1", _hours(2), "rating", 5.0),
        ("c1", "p1", "c1", _hours(0.1), "click", 0.0),
        ("c2", "p1", "c1", _hours(0.2), "click", 1.0),
        ("c3", "p1", "c1", _hours(0.3), "click", 0.0),
        ("c4", "p2", "c2", _hours(0.1), "click", 0.0),
        ("c5", "p2", "c2", _hours(0.2), "click", 0.0),
        ("t2", "p1", "c1", _hours(5), "thumb", -1.0),
        ("t1", "p1", "c1", _hours(4), "thumb", 1.0),
    )

    labeled = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    assert labeled.loc["p1", "rating"] == 3.5
    assert labeled.loc["p1", "clicked"] == 1.0
    assert labeled.loc["p2", "clicked"] == 0.0
    assert labeled.loc["p1", "thumb"] == -1.0
    assert np.isnan(labeled.loc["p2", "thumb"])
    assert labeled.loc["p1", "n_feedback"] == 7
    assert labeled.loc["p2", "n_feedback"] == 2


def test_correction_overrides_label_even_when_earlier() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(
        ("corr", "p1", "c1", _hours(1), "correction", 0.0),
        ("lab", "p1", "c1", _hours(2), "label", 1.0),
    )
    settings = _settings(label_kinds=[FeedbackKind.CORRECTION, FeedbackKind.LABEL])

    row = _label(preds, events, settings, AFTER_ALL_WINDOWS).loc["p1"]

    assert row["label"] == 0.0
    assert row["label_source"] == "correction"
    assert row["feedback_delay_s"] == 3600.0


def test_late_and_orphaned_events_do_not_label() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(
        ("late", "p1", "c1", T0 + pd.Timedelta(days=8), "label", 1.0),
        ("orphan", "p9", "c1", _hours(1), "label", 1.0),
    )

    row = _label(preds, events, _settings(), AFTER_ALL_WINDOWS).loc["p1"]

    assert np.isnan(row["label"])
    assert row["label_status"] == "unlabeled_final"
    assert row["n_feedback"] == 0


def test_events_received_after_as_of_are_ignored() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(
        ("f1", "p1", "c1", _hours(2), "label", 1.0),
        ("f2", "p1", "c1", _hours(30), "label", 0.0),
    )
    settings = _settings()

    early = _label(preds, events, settings, _hours(1)).loc["p1"]
    middle = _label(preds, events, settings, _hours(2)).loc["p1"]
    late = _label(preds, events, settings, _hours(30)).loc["p1"]

    assert (early["label_status"], early["n_feedback"]) == ("pending", 0)
    assert np.isnan(early["label"])
    assert (middle["label"], middle["n_feedback"]) == (1.0, 1)
    assert (late["label"], late["n_feedback"]) == (0.0, 2)


def test_unlabeled_prediction_is_pending_until_the_label_window_has_passed() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("t1", "p1", "c1", _hours(1), "thumb", 1.0))
    settings = _settings()
    window_end = T0 + settings.label_window

    before = _label(preds, events, settings, window_end - US).loc["p1"]
    at_end = _label(preds, events, settings, window_end).loc["p1"]

    assert before["label_status"] == "pending"
    assert at_end["label_status"] == "unlabeled_final"
    assert np.isnan(at_end["label"])
    assert at_end["thumb"] == 1.0


def test_negative_policy_imputes_zero_only_after_the_label_window() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0))
    events = _feedback(("lab", "p2", "c2", _hours(1), "label", 1.0))
    settings = _settings(missing_feedback_policy=MissingFeedbackPolicy.NEGATIVE)
    window_end = T0 + settings.label_window

    before = _label(preds, events, settings, window_end - US)
    after = _label(preds, events, settings, window_end)

    assert before.loc["p1", "label_status"] == "pending"
    assert np.isnan(before.loc["p1", "label"])
    assert after.loc["p1", "label_status"] == "imputed_negative"
    assert after.loc["p1", "label"] == 0.0
    assert after.loc["p1", "label_source"] == "policy:negative"
    assert (after.loc["p2", "label_status"], after.loc["p2", "label"]) == ("labeled", 1.0)


def test_exclude_policy_never_imputes() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("t1", "p1", "c1", _hours(1), "thumb", 1.0))

    row = _label(preds, events, _settings(), AFTER_ALL_WINDOWS).loc["p1"]

    assert row["label_status"] == "unlabeled_final"
    assert np.isnan(row["label"])
    assert pd.isna(row["label_source"])


def test_label_window_follows_the_label_kinds() -> None:
    preds = _predictions(("p1", "c1", T0))
    events = _feedback(("t1", "p1", "c1", _hours(1), "thumb", 1.0))
    kinds = _kinds(label=("2d", "latest"), correction=("3d", "latest"), thumb=("10d", "latest"))
    settings = _settings(feedback_kinds=kinds)

    assert settings.label_window == dt.timedelta(days=3)
    assert settings.longest_window == dt.timedelta(days=10)
    assert settings.window_days == 10
    row = _label(preds, events, settings, T0 + pd.Timedelta(days=3)).loc["p1"]
    assert row["label_status"] == "unlabeled_final"


def test_one_event_never_counts_for_two_predictions() -> None:
    preds = _predictions(
        ("p1", "c1", T0), ("p2", "c1", _hours(1)), ("p3", "c1", _hours(1)), ("p4", "c2", T0)
    )
    events = _feedback(
        ("e1", None, "c1", _hours(2), "label", 1.0),
        ("e2", "p4", "c2", _hours(2), "label", 0.0),
    )

    labeled = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    assert labeled["n_feedback"].sum() == 2
    assert labeled["label"].notna().sum() == 2
    assert labeled.loc["p1", "n_feedback"] == 0
    assert labeled.loc["p2", "n_feedback"] + labeled.loc["p3", "n_feedback"] == 1


# --- day_maturity ----------------------------------------------------------------------------


def test_day_maturity_turns_final_exactly_when_the_longest_window_has_passed() -> None:
    settings = _settings()
    day_end = pd.Timestamp("2026-10-06", tz="UTC")
    flip = day_end + settings.longest_window

    assert day_maturity(day_end, settings, day_end) == "provisional"
    assert day_maturity(day_end, settings, flip - US) == "provisional"
    assert day_maturity(day_end, settings, flip) == "final"
    assert day_maturity(day_end, settings, flip + pd.Timedelta(days=1)) == "final"


def test_day_maturity_uses_the_longest_window_of_any_kind() -> None:
    kinds = _kinds(label=("7d", "latest"), correction=("7d", "latest"), dwell=("14d", "sum"))
    settings = _settings(feedback_kinds=kinds)
    day_end = pd.Timestamp("2026-10-06", tz="UTC")

    assert day_maturity(day_end, settings, day_end + pd.Timedelta(days=10)) == "provisional"
    assert day_maturity(day_end, settings, day_end + pd.Timedelta(days=14)) == "final"


# --- property: attribute_feedback against a brute-force reference ----------------------------

GRID = pd.Timedelta(minutes=30)
PROPERTY_KINDS = _kinds(
    label=("3h", "latest"), correction=("3h", "latest"), click=("1h", "any"), thumb=("2h", "latest")
)
ENTITIES = ["c0", "c1", "c2", "c3"]  # c3 never has a prediction


def _reference(events: pd.DataFrame, preds: pd.DataFrame) -> list[dict]:
    windows = {k.value: v.window for k, v in PROPERTY_KINDS.items()}
    by_id = {row.prediction_id: row.timestamp for row in preds.itertuples()}
    out = []
    for event in events.itertuples():
        if event.prediction_id is not None:
            match = "prediction_id"
            when = by_id.get(event.prediction_id)
            # Stamped more than the clock skew before its prediction: it cannot be about it.
            if when is not None and event.timestamp < when - pd.Timedelta(hours=1):
                when = None
            targets = {event.prediction_id} if when is not None else set()
        else:
            match = "entity_asof"
            same_entity = [p for p in preds.itertuples() if p.entity_id == event.entity_id]
            earlier = [p for p in same_entity if p.timestamp <= event.timestamp]
            when = max((p.timestamp for p in earlier), default=None)
            targets = {p.prediction_id for p in earlier if p.timestamp == when}
        if not targets:
            out.append({"targets": set(), "match": "none", "status": "orphaned"})
            continue
        delay = event.timestamp - when
        status = "late" if delay > windows[event.kind] else "attributed"
        out.append(
            {"targets": targets, "match": match, "status": status, "when": when, "delay": delay}
        )
    return out


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_preds = draw(st.integers(0, 6))
    preds = _predictions(
        *(
            (f"p{i}", draw(st.sampled_from(ENTITIES[:3])), T0 + GRID * draw(st.integers(0, 12)))
            for i in range(n_preds)
        )
    )
    ids = [*preds["prediction_id"], "p_unknown"]
    rows = []
    for i in range(draw(st.integers(0, 10))):
        by_id = draw(st.booleans())
        pid = draw(st.sampled_from(ids)) if by_id else None
        entity = draw(st.sampled_from(ENTITIES))
        kind = draw(st.sampled_from(["label", "click", "thumb"]))
        rows.append((f"f{i}", pid, entity, T0 + GRID * draw(st.integers(0, 20)), kind, 1.0))
    return preds, _feedback(*rows)


PROPERTY_SETTINGS = _settings(feedback_kinds=PROPERTY_KINDS)


def _check_against_reference(
    preds: pd.DataFrame, events: pd.DataFrame, expected: list[dict] | None = None
) -> None:
    result = attribute_feedback(events, preds, PROPERTY_SETTINGS)
    expected = _reference(events, preds) if expected is None else expected

    assert len(result) == len(events)
    assert result["feedback_id"].tolist() == events["feedback_id"].tolist()
    for (_, got), want in zip(result.iterrows(), expected, strict=True):
        assert got["status"] == want["status"], (got.to_dict(), want)
        assert got["match"] == want["match"]
        if want["targets"]:
            assert got["target_prediction_id"] in want["targets"]
            assert got["prediction_timestamp"] == want["when"]
            assert got["delay_s"] == want["delay"].total_seconds()
        else:
            assert pd.isna(got["target_prediction_id"])
            assert np.isnan(got["delay_s"])


_ALL_UNMATCHED_ENTITY_LOOKUP = (
    _predictions(("p0", "c0", T0)),
    _feedback(
        ("f0", "p0", "c0", T0 + GRID, "click", 1.0),
        ("f1", None, "c3", T0 + GRID, "click", 1.0),
    ),
)


# Reproducible runs of the reference comparison: the same examples every time, none shrunk.
_REPRODUCIBLE = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "phases": [Phase.explicit, Phase.generate],
}


@hypothesis_settings(max_examples=200, **_REPRODUCIBLE)
@example(_ALL_UNMATCHED_ENTITY_LOOKUP)
@given(_scenario())
def test_attribution_matches_a_brute_force_reference_on_every_input(
    scenario: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    _check_against_reference(*scenario)


# --- the hash joins: a collision never joins two different ids -------------------------------


def _every_hash_collides(patch: pytest.MonkeyPatch) -> None:
    """Every string hashes to 0, so that every pair a hash join finds must be checked."""
    patch.setattr(pl.Expr, "hash", lambda self, *args, **kwargs: pl.lit(0, pl.UInt64))


@hypothesis_settings(max_examples=60, **_REPRODUCIBLE)
@example(_ALL_UNMATCHED_ENTITY_LOOKUP)
@given(_scenario())
def test_attribution_is_exact_even_when_every_hash_collides(
    scenario: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _every_hash_collides(patch)
        _check_against_reference(*scenario)


def test_labels_are_the_same_when_every_hash_collides() -> None:
    preds = _predictions(
        ("p1", "c1", T0), ("p2", "c1", _hours(1)), ("p3", "c2", T0), ("p4", "c3", _hours(2))
    )
    events = _feedback(
        ("f1", "p1", "c1", _hours(1), "label", 1.0),
        ("f2", None, "c1", _hours(2), "label", 0.0),
        ("f3", "p3", "c2", _hours(3), "thumb", -1.0),
        ("f4", None, "c2", _hours(4), "rating", 2.0),
        ("f5", "p9", "c3", _hours(5), "label", 1.0),
        ("f6", None, "c4", _hours(5), "label", 1.0),
    )
    expected = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    with pytest.MonkeyPatch.context() as patch:
        _every_hash_collides(patch)
        got = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    pd.testing.assert_frame_equal(got, expected)
    assert got["n_feedback"].tolist() == [1, 1, 2, 0]


# --- conflict rules on any values, in any input order -----------------------------------------


@hypothesis_settings(max_examples=120, deadline=None, database=None, derandomize=True)
@given(
    rule=st.sampled_from(list(ConflictRule)),
    rows=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.floats(1, 5)), min_size=1, max_size=40
    ),
    seed=st.integers(0, 2**16),
)
def test_each_rule_combines_values_as_numpy_does_in_time_order(
    rule: ConflictRule, rows: list[tuple[int, int, float]], seed: int
) -> None:
    """Sums and means to the last bit of ``np.sum`` and ``np.mean`` of the values in time order,
    ties broken by id, however the events are listed (runs of 8 and more sum pairwise)."""
    preds = _predictions(*((f"p{i}", f"c{i}", T0) for i in range(3)))
    events = _feedback(
        *(
            (f"f{i:02d}", f"p{p}", f"c{p}", _hours(1 + hour), "rating", value)
            for i, (p, hour, value) in enumerate(rows)
        )
    )
    kinds = dict(_SHIPPED.feedback_kinds)
    kinds[FeedbackKind.RATING] = FeedbackKindSettings(window="7d", conflict=rule)
    settings = _settings(feedback_kinds=kinds)

    labeled = _label(preds, events.sample(frac=1.0, random_state=seed), settings, AFTER_ALL_WINDOWS)

    in_order = events.sort_values(["timestamp", "feedback_id"])
    for i in range(3):
        values = in_order.loc[in_order["prediction_id"] == f"p{i}", "value"].to_numpy()
        got = labeled.loc[f"p{i}", "rating"]
        if not len(values):
            assert np.isnan(got)
            continue
        expected = {
            ConflictRule.LATEST: values[-1],
            ConflictRule.EARLIEST: values[0],
            ConflictRule.MEAN: np.mean(values),
            ConflictRule.SUM: np.sum(values),
            ConflictRule.MAX: np.max(values),
            ConflictRule.ANY: float(np.max(values) > 0),
        }[rule]
        assert got == expected, (rule, values)


def test_a_prediction_logged_twice_gets_its_events_on_both_copies() -> None:
    preds = _predictions(("p1", "c1", T0), ("p1", "c1", T0), ("p2", "c2", T0))
    events = _feedback(
        ("f1", "p1", "c1", _hours(1), "label", 1.0),
        ("f2", "p1", "c1", _hours(2), "label", 0.0),
        ("f3", "p2", "c2", _hours(1), "thumb", 1.0),
    )
    attributed = attribute_feedback(events, preds, _settings())

    labeled = label_predictions(preds, attributed, _settings(), AFTER_ALL_WINDOWS)

    assert labeled["n_feedback"].tolist() == [2, 2, 1]
    assert labeled["label"].tolist()[:2] == [0.0, 0.0]
    assert labeled["thumb"].tolist()[2] == 1.0


# --- labeling's guesses of where each prediction is ------------------------------------------


def test_each_event_carries_the_position_of_its_prediction_and_none_without_one() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0), ("p3", "c2", _hours(1)))
    events = _feedback(
        ("f1", "p2", "c2", _hours(1), "label", 1.0),
        ("f2", None, "c2", _hours(2), "label", 0.0),  # as-of: p3
        ("f3", "p9", "c9", _hours(1), "label", 1.0),  # orphaned
        ("f4", "p1", "c1", T0 - pd.Timedelta(hours=2), "label", 1.0),  # before p1: orphaned
    )

    attributed = attribute_feedback(events, preds, _settings())

    assert attributed["target_row"].tolist() == [1, 2, pd.NA, pd.NA]


@st.composite
def _guesses(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, list[int | None]]:
    preds, events = draw(_scenario())
    if draw(st.booleans()) and len(preds):  # a prediction logged twice
        preds = pd.concat([preds, preds.iloc[[draw(st.integers(0, len(preds) - 1))]]])
        preds = preds.reset_index(drop=True)
    bound = 2 * len(preds) + 2
    guesses = draw(
        st.lists(st.none() | st.integers(-2, bound), min_size=len(events), max_size=len(events))
    )
    return preds, events, guesses


@hypothesis_settings(max_examples=150, **_REPRODUCIBLE)
@given(_guesses())
def test_labels_are_the_same_whatever_the_guessed_positions(
    scenario: tuple[pd.DataFrame, pd.DataFrame, list[int | None]],
) -> None:
    """Right, wrong, stale, out-of-range or missing guesses, or none at all: the same labels."""
    preds, events, guesses = scenario
    attributed = attribute_feedback(events, preds, PROPERTY_SETTINGS)
    expected = label_predictions(
        preds, attributed.drop(columns="target_row"), PROPERTY_SETTINGS, AFTER_ALL_WINDOWS
    )

    guessed = attributed.assign(target_row=pd.array(guesses, dtype="Int64"))
    shuffled = preds.iloc[::-1].reset_index(drop=True)  # every guess stale

    for frame, events_with in ((preds, attributed), (preds, guessed), (shuffled, attributed)):
        got = label_predictions(frame, events_with, PROPERTY_SETTINGS, AFTER_ALL_WINDOWS)
        if frame is shuffled:
            got = got.iloc[::-1].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected)


def test_positions_in_frames_end_to_end_become_rows_of_their_own_frame() -> None:
    positions = pd.Series(pd.array([0, 2, 3, None, 7, 5], dtype="Int64"), index=[4, 5, 6, 7, 8, 9])

    rows = rows_within_parts(positions, [3, 0, 2, 3])

    assert rows.tolist() == [0, 2, 0, pd.NA, 2, 0]
    assert rows.index.equals(positions.index)
    assert rows_within_parts(pd.Series(pd.array([], dtype="Int64")), []).empty


def test_a_guess_is_taken_only_where_the_id_there_is_the_events() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0))
    events = _feedback(
        ("f1", "p1", "c1", _hours(1), "label", 1.0),
        ("f2", "p2", "c2", _hours(1), "label", 0.0),
    )
    attributed = attribute_feedback(events, preds, _settings())
    swapped = attributed.assign(target_row=pd.array([1, 0], dtype="Int64"))

    labeled = label_predictions(preds, swapped, _settings(), AFTER_ALL_WINDOWS)

    assert labeled["label"].tolist() == [1.0, 0.0]


def test_labels_are_the_same_with_64_bit_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions are 32-bit integers below 2**31 rows; the 64-bit ones give the same labels."""
    preds = _predictions(*((f"p{i}", f"c{i % 3}", _hours(i)) for i in range(6)))
    events = _feedback(
        *(
            (f"f{i}", f"p{i % 6}" if i % 4 else None, f"c{i % 3}", _hours(i / 2), kind, value)
            for i, (kind, value) in enumerate(
                [("label", 1.0), ("thumb", -1.0), ("rating", 4.0), ("click", 1.0)] * 6
            )
        )
    )
    expected = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    monkeypatch.setattr(attribution, "_positions", lambda limit: np.int64)

    pd.testing.assert_frame_equal(_label(preds, events, _settings(), AFTER_ALL_WINDOWS), expected)


def test_predictions_and_events_on_any_index_come_back_on_a_fresh_one() -> None:
    preds = _predictions(("p1", "c1", T0), ("p2", "c2", T0)).set_axis([7, 3])
    events = _feedback(("f1", "p2", "c2", _hours(1), "label", 1.0)).set_axis([5])

    attributed = attribute_feedback(events, preds, _settings())
    labeled = label_predictions(preds, attributed, _settings(), AFTER_ALL_WINDOWS)

    assert attributed.index.equals(pd.RangeIndex(1))
    assert attributed["target_prediction_id"].tolist() == ["p2"]
    assert labeled.index.equals(pd.RangeIndex(2))
    assert labeled["prediction_id"].tolist() == ["p1", "p2"]
    assert labeled["label"].tolist()[1] == 1.0
    assert np.isnan(labeled["label"].tolist()[0])


def test_contradictions_within_a_kind_and_between_thumbs_and_ratings_are_flagged() -> None:
    preds = _predictions(*((f"p{i}", f"c{i}", T0) for i in range(5)))
    events = _feedback(
        ("a1", "p0", "c0", _hours(1), "thumb", 1.0),  # thumb up, rating 1: contradictory
        ("a2", "p0", "c0", _hours(2), "rating", 1.0),
        ("b1", "p1", "c1", _hours(1), "thumb", 1.0),  # thumb up, rating 5: consistent
        ("b2", "p1", "c1", _hours(2), "rating", 5.0),
        ("c1", "p2", "c2", _hours(1), "thumb", 1.0),  # thumbs both ways
        ("c2", "p2", "c2", _hours(2), "thumb", -1.0),
        ("d1", "p3", "c3", _hours(1), "label", 1.0),  # labels of both classes
        ("d2", "p3", "c3", _hours(2), "label", 0.0),
        ("e1", "p4", "c4", _hours(1), "rating", 2.0),  # ratings two stars apart: not
        ("e2", "p4", "c4", _hours(2), "rating", 4.0),
    )

    labeled = _label(preds, events, _settings(), AFTER_ALL_WINDOWS)

    assert labeled["contradictory"].to_dict() == {
        "p0": True,
        "p1": False,
        "p2": True,
        "p3": True,
        "p4": False,
    }


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_the_events_sort_key_comes_back_sorted_with_the_positions_that_sort_it(
    dtype: type[np.signedinteger],
) -> None:
    """Both ways of sorting the key (packed with its positions, or by position) agree with it."""
    key = np.random.default_rng(3).integers(0, 50, 1000).astype(dtype)
    key[:3] = [2**31 - 1 if dtype == np.int32 else 2**40, 0, 0]

    order, ordered = attribution._sorted_order(key.copy())

    assert ordered.dtype == key.dtype
    assert np.array_equal(np.sort(order), np.arange(len(key)))
    assert np.array_equal(key[order], ordered)
    assert np.array_equal(ordered, np.sort(key))


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", "c", "ab"])), max_size=30))
def test_predictions_in_time_order_are_a_sort_by_time_then_id(rows: list[tuple[int, str]]) -> None:
    """Only the predictions sharing an instant are sorted by id too: as if all had been."""
    preds = pl.DataFrame(
        {
            "timestamp": pl.Series([t for t, _ in rows], dtype=pl.Int64).cast(pl.Datetime("ns")),
            "prediction_id": [i for _, i in rows],
        },
        schema={"timestamp": pl.Datetime("ns"), "prediction_id": pl.String},
    ).with_row_index("target")

    order = attribution._in_time_order(preds)

    in_order = preds if order is None else preds[order]
    expected = preds.sort("timestamp", "prediction_id")
    assert in_order.select("timestamp", "prediction_id").equals(
        expected.select("timestamp", "prediction_id")
    )
    if order is not None:
        assert sorted(order.tolist()) == list(range(len(rows)))
    stamps = [t for t, _ in rows]
    assert (order is None) == all(a < b for a, b in itertools.pairwise(stamps))


def test_of_two_predictions_of_an_entity_at_one_instant_the_greatest_id_gets_the_event() -> None:
    preds = _predictions(
        ("p9", "c1", T0 + pd.Timedelta(hours=1)),
        ("p0", "c1", T0),
        ("p2", "c1", T0 + pd.Timedelta(hours=1)),
        ("p5", "c2", T0 + pd.Timedelta(hours=1)),  # another entity's at the same instant
    )
    events = _feedback(("f1", None, "c1", T0 + pd.Timedelta(hours=2), "label", 1.0))

    result = attribute_feedback(events, preds, _settings())

    assert result["target_prediction_id"].tolist() == ["p9"]


@hypothesis_settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["thumb", "rating", None]), st.sampled_from(["late", "b", None])),
        max_size=40,
    ),
    st.booleans(),
)
def test_counts_by_categories_are_pandas_group_sizes(
    rows: list[tuple[str | None, str | None]], categorical: bool
) -> None:
    frame = pd.DataFrame(rows, columns=["kind", "status"], dtype=object)
    if categorical:  # unused categories, and an order other than sorted
        frame["kind"] = pd.Categorical(frame["kind"], categories=["rating", "thumb", "click"])
        frame["status"] = pd.Categorical(frame["status"], categories=["late", "b"])
    sizes = frame.groupby(["kind", "status"], observed=True).size()
    expected = {f"{k}/{s}": int(n) for (k, s), n in sizes.items()}

    got = attribution.counts_by(frame, ["kind", "status"])

    assert list(got.items()) == list(expected.items())  # the same counts, in the same order


def test_each_event_carries_its_predictions_id_from_days_in_several_chunks() -> None:
    # Predictions of two days joined end to end: their ids are Arrow text in several chunks.
    days = [
        _predictions(("p1", "c1", T0), ("p2", "c2", T0)),
        _predictions(("p3", "c1", T0 + pd.Timedelta(days=1)), ("p4", "c3", T0)),
    ]
    text = {"prediction_id": "string[pyarrow]", "entity_id": "string[pyarrow]"}
    preds = pd.concat([day.astype(text) for day in days], ignore_index=True)
    assert preds["prediction_id"].array._pa_array.num_chunks == 2  # pyright: ignore[reportAttributeAccessIssue]
    later = T0 + pd.Timedelta(days=1, hours=1)
    events = _feedback(
        ("f1", "p4", "c3", later, "label", 1.0),  # named
        ("f2", None, "c1", later, "label", 0.0),  # by entity: the second day's p3
        ("f3", "p9", "c9", later, "label", 1.0),  # no such prediction
        ("f4", None, "c2", later, "label", 1.0),  # by entity: the first day's p2
    )

    result = attribute_feedback(events, preds, _settings())

    assert result["target_prediction_id"].tolist()[:2] == ["p4", "p3"]
    assert pd.isna(result["target_prediction_id"].iloc[2])
    assert result["target_prediction_id"].iloc[3] == "p2"
    assert str(result["target_prediction_id"].dtype) == "string"
    found = result["target_row"].dropna().astype(int)
    assert preds["prediction_id"].iloc[found].tolist() == ["p4", "p3", "p2"]


def test_without_predictions_every_event_is_orphaned_with_no_id() -> None:
    events = _feedback(("f1", "p1", "c1", T0, "label", 1.0), ("f2", None, "c1", T0, "thumb", 1.0))

    result = attribute_feedback(events, _predictions(), _settings())

    assert result["status"].tolist() == ["orphaned", "orphaned"]
    assert result["target_prediction_id"].isna().all()
    assert str(result["target_prediction_id"].dtype) == "string"
