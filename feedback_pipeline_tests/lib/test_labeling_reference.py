"""The whole labeling path against an independent, naive implementation of the same semantics.

The reference joins the obvious way (every event with every prediction of its entity, then
filtered), combines each kind in plain Python, and scores the result with scikit-learn. The
pipeline's polars joins and per-slice metrics must give exactly the same labels and numbers.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from feedback_pipeline.bench import synthetic
from feedback_pipeline.lib.attribution import attribute_feedback, label_predictions
from feedback_pipeline.lib.metrics import performance_metrics
from feedback_pipeline.lib.settings import (
    ConflictRule,
    FeedbackKind,
    FeedbackKindSettings,
    MissingFeedbackPolicy,
    Settings,
    default_settings_path,
    load_settings,
)

_SHIPPED = load_settings(default_settings_path())
AS_OF = pd.Timestamp("2026-10-09", tz="UTC")  # some labels still pending, others final


def _naive_targets(events: pd.DataFrame, preds: pd.DataFrame, settings: Settings) -> pd.Series:
    """Each event's prediction by merge-then-filter, or None (orphaned or late)."""
    windows = {k.value: v.window for k, v in settings.feedback_kinds.items()}
    ids = preds.set_index("prediction_id")["timestamp"]
    target: dict[str, str | None] = {}
    named = events[events["prediction_id"].notna()]
    for event in named.itertuples():
        when = ids.get(event.prediction_id)
        delay = event.timestamp - when if when is not None else None
        # Within the window, and not stamped earlier than the clock skew before its prediction.
        ok = delay is not None and -settings.max_clock_skew <= delay <= windows[event.kind]
        target[event.feedback_id] = event.prediction_id if ok else None
    loose = events[events["prediction_id"].isna()]
    pairs = loose.merge(preds, on="entity_id", suffixes=("", "_p"))
    pairs = pairs[pairs["timestamp_p"] <= pairs["timestamp"]]
    pairs = pairs.sort_values(["feedback_id", "timestamp_p", "prediction_id_p"])
    latest = pairs.groupby("feedback_id").tail(1).set_index("feedback_id")
    for event in loose.itertuples():
        if event.feedback_id not in latest.index:
            target[event.feedback_id] = None
            continue
        match = latest.loc[event.feedback_id]
        ok = event.timestamp - match["timestamp_p"] <= windows[event.kind]
        target[event.feedback_id] = match["prediction_id_p"] if ok else None
    return pd.Series(target).reindex(events["feedback_id"]).set_axis(events.index)


def _combine(values: list[float], rule: ConflictRule) -> float:
    match rule:
        case ConflictRule.LATEST:
            return values[-1]
        case ConflictRule.EARLIEST:
            return values[0]
        case ConflictRule.MEAN:
            return float(np.mean(values))
        case ConflictRule.MAX:
            return max(values)
        case ConflictRule.SUM:
            return float(sum(values))
        case ConflictRule.ANY:
            return float(max(values) > 0)


def _naive_labels(
    preds: pd.DataFrame, events: pd.DataFrame, settings: Settings, as_of: pd.Timestamp
) -> pd.DataFrame:
    events = events.assign(target=_naive_targets(events, preds, settings))
    known = events[events["target"].notna() & (events["timestamp"] <= as_of)]
    known = known.sort_values(["timestamp", "feedback_id"])
    out = preds.set_index("prediction_id")[["timestamp", "score", "model_version"]].copy()
    out["label"] = np.nan
    out["n_feedback"] = known.groupby("target").size().reindex(out.index).fillna(0).astype(int)
    combined: dict[str, pd.Series] = {}
    for kind, rule in settings.feedback_kinds.items():
        rows = known[(known["kind"] == kind.value) & known["value"].notna()]
        combined[kind.value] = rows.groupby("target")["value"].agg(
            lambda v, rule=rule: _combine(list(v), rule.conflict)
        )
    for kind in reversed(settings.label_kinds):
        values = combined[kind.value].reindex(out.index)
        out["label"] = values.where(values.notna(), out["label"])
    window_over = out["timestamp"] + settings.label_window <= as_of
    out["label_status"] = np.select(
        [out["label"].notna(), ~window_over], ["labeled", "pending"], "unlabeled_final"
    )
    if settings.missing_feedback_policy == MissingFeedbackPolicy.NEGATIVE:
        imputed = out["label_status"] == "unlabeled_final"
        out.loc[imputed, "label"] = 0.0
        out.loc[imputed, "label_status"] = "imputed_negative"
    out["thumb"] = combined["thumb"].reindex(out.index)
    out["rating"] = combined["rating"].reindex(out.index)
    return out.astype({"label": float, "thumb": float, "rating": float})


def _day(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    preds = synthetic.predictions(n, seed)
    return preds, synthetic.feedback(preds, seed + 1)


@pytest.mark.parametrize("policy", [MissingFeedbackPolicy.EXCLUDE, MissingFeedbackPolicy.NEGATIVE])
def test_labels_and_metrics_equal_a_naive_join_scored_by_scikit_learn(
    policy: MissingFeedbackPolicy,
) -> None:
    settings = _SHIPPED.model_copy(update={"missing_feedback_policy": policy})
    preds, events = _day(3000, seed=7)

    attributed = attribute_feedback(events, preds, settings)
    labeled = label_predictions(preds, attributed, settings, AS_OF).set_index("prediction_id")
    expected = _naive_labels(preds, events, settings, AS_OF)

    assert labeled.index.tolist() == expected.index.tolist()
    pd.testing.assert_series_equal(labeled["label"], expected["label"], check_names=False)
    assert labeled["label_status"].astype(str).tolist() == expected["label_status"].tolist()
    assert labeled["n_feedback"].tolist() == expected["n_feedback"].tolist()
    for column in ("thumb", "rating"):
        pd.testing.assert_series_equal(labeled[column], expected[column], check_names=False)
    assert set(expected["label_status"]) >= {"labeled", "pending"}

    table = performance_metrics(labeled.reset_index(), settings, "provisional")
    known = expected[expected["label_status"].isin(["labeled", "imputed_negative"])]
    for version in ("all", "v1", "v2"):
        rows = known if version == "all" else known[known["model_version"] == version]
        got = table[(table["model_version"] == version) & (table["segment"] == "all")].iloc[0]
        y, score = rows["label"].astype(int), rows["score"]
        pred = (score >= settings.score_cutoff).astype(int)
        assert got["accuracy"] == skm.accuracy_score(y, pred)
        assert got["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-15)
        assert got["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-15)
        assert got["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-15)
        # The curve is drawn from the slice's rows as sorted once, and scikit-learn's from its
        # own sort, leaving out the points on a straight line: the areas may differ in the last
        # bits. Means summed in another row order likewise, and no more.
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), rel=1e-14)
        assert got["log_loss"] == pytest.approx(skm.log_loss(y, score), rel=1e-14)
        assert got["brier"] == pytest.approx(skm.brier_score_loss(y, score), rel=1e-14)
        assert [got[k] for k in ("tn", "fp", "fn", "tp")] == skm.confusion_matrix(
            y, pred
        ).ravel().tolist()
        assert got["n_labeled"] == len(rows)


# --- property: label_predictions against the naive reference on random small days -------------

RULES = list(ConflictRule)
KINDS = [FeedbackKind.LABEL, FeedbackKind.CORRECTION, FeedbackKind.THUMB, FeedbackKind.RATING]
T0 = pd.Timestamp("2026-10-05", tz="UTC")
STEP = pd.Timedelta(hours=6)


@st.composite
def _random_day(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, Settings, pd.Timestamp]:
    kinds = {
        kind: FeedbackKindSettings(
            window=f"{draw(st.integers(1, 4)) * 6}h", conflict=draw(st.sampled_from(RULES))
        )
        for kind in KINDS
    }
    settings = _SHIPPED.model_copy(
        update={
            "feedback_kinds": kinds,
            "label_kinds": [FeedbackKind.CORRECTION, FeedbackKind.LABEL],
            "missing_feedback_policy": draw(st.sampled_from(list(MissingFeedbackPolicy)[:2])),
        }
    )
    n = draw(st.integers(1, 6))
    preds = pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(n)],
            "entity_id": [draw(st.sampled_from(["a", "b", "c"])) for _ in range(n)],
            "timestamp": [T0 + STEP * draw(st.integers(0, 4)) for _ in range(n)],
            "score": [draw(st.floats(0, 1)) for _ in range(n)],
            "model_version": "v1",
        }
    )
    m = draw(st.integers(0, 12))
    values = {"label": [0.0, 1.0], "correction": [0.0, 1.0], "thumb": [-1.0, 1.0]}
    rows = []
    for i in range(m):
        kind = draw(st.sampled_from([k.value for k in KINDS]))
        by_id = draw(st.booleans())
        rows.append(
            {
                "feedback_id": f"f{i:02d}",
                "prediction_id": draw(st.sampled_from([*preds["prediction_id"], "zz"]))
                if by_id
                else None,
                "entity_id": draw(st.sampled_from(["a", "b", "c", "d"])),
                "timestamp": T0 + STEP * draw(st.integers(0, 8)),
                "kind": kind,
                "value": draw(st.sampled_from(values.get(kind, [1.0, 3.0, 5.0]))),
                "user": "u1",
            }
        )
    events = pd.DataFrame(
        rows,
        columns=["feedback_id", "prediction_id", "entity_id", "timestamp", "kind", "value", "user"],
    )
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    as_of = T0 + STEP * draw(st.integers(0, 10))
    return preds, events, settings, as_of


@hypothesis_settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(_random_day())
def test_labels_equal_the_naive_reference_on_random_days(
    day: tuple[pd.DataFrame, pd.DataFrame, Settings, pd.Timestamp],
) -> None:
    preds, events, settings, as_of = day
    attributed = attribute_feedback(events, preds, settings)
    labeled = label_predictions(preds, attributed, settings, as_of).set_index("prediction_id")
    expected = _naive_labels(preds, events, settings, as_of)

    pd.testing.assert_series_equal(labeled["label"], expected["label"], check_names=False)
    assert labeled["label_status"].astype(str).tolist() == expected["label_status"].tolist()
    assert labeled["n_feedback"].tolist() == expected["n_feedback"].tolist()
    pd.testing.assert_series_equal(labeled["thumb"], expected["thumb"], check_names=False)
    pd.testing.assert_series_equal(labeled["rating"], expected["rating"], check_names=False)
