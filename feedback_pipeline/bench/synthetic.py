"""Fast synthetic days for benchmarks: validated predictions and their feedback, built with numpy.

The simulator is realistic but writes files row by row; benchmarks need 10M rows in seconds. The
frames here have the columns and types the pipeline's validated assets have, and the shapes that
make joins hard: a Zipf-skewed entity column (a few entities make a large share of the traffic),
feedback by prediction id and by entity id only, events late past their window, and orphans.
"""

import numpy as np
import pandas as pd

from feedback_pipeline.lib.schemas import TEXT

DAY = pd.Timestamp("2026-10-05", tz="UTC")
COUNTRIES = np.array(["US", "DE", "FR", "GB", "BR", "IN", "JP"])
PLATFORMS = np.array(["ios", "android", "web"])
# (kind, share of predictions that get one, median delay in seconds, value sampler name)
FEEDBACK_PLAN = [
    ("label", 0.35, 1.5 * 86400),
    ("thumb", 0.10, 3 * 3600),
    ("rating", 0.05, 6 * 3600),
    ("click", 0.30, 120),
    ("conversion", 0.05, 86400),
]
ENTITY_ONLY_SHARE = 0.3
ORPHAN_SHARE = 0.01


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    """Arrow-backed string ids such as ``p000123``; the pipeline's validated id type."""
    return pd.Series(np.char.add(prefix, numbers.astype("U12")), dtype=TEXT)


def predictions(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` predictions of one day, sorted by time, with a skewed entity column."""
    rng = np.random.default_rng(seed)
    n_entities = max(n // 4, 1)
    # Zipf ranks folded into the entity range: rank 1 alone takes about a tenth of the traffic.
    entity = (rng.zipf(1.3, n) - 1) % n_entities
    seconds = np.sort(rng.uniform(0, 86400, n))
    truth = rng.random(n) < 0.3
    score = np.clip(rng.normal(np.where(truth, 0.65, 0.35), 0.18), 0, 1)
    return pd.DataFrame(
        {
            "prediction_id": _ids("p", np.arange(n)),
            "entity_id": _ids("c", entity),
            "timestamp": DAY + pd.to_timedelta(seconds, unit="s"),
            "model_name": pd.Series(["model"] * n, dtype=TEXT),
            "model_version": pd.Series(np.where(rng.random(n) < 0.5, "v1", "v2"), dtype=TEXT),
            "score": score,
            "predicted_label": pd.array((score >= 0.5).astype("int8"), dtype="Int8"),
            "latency_ms": rng.gamma(4.0, 20.0, n),
            "country": pd.Series(COUNTRIES[rng.integers(0, 7, n)], dtype=TEXT),
            "platform": pd.Series(PLATFORMS[rng.integers(0, 3, n)], dtype=TEXT),
            "_truth": truth.astype(float),
        }
    )


def feedback(preds: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The feedback of ``preds``: each kind on a share of them, some by entity only, orphans."""
    rng = np.random.default_rng(seed)
    n = len(preds)
    truth = preds["_truth"].to_numpy()
    stamps = preds["timestamp"].dt.tz_localize(None).to_numpy()
    parts = []
    for kind, share, delay in FEEDBACK_PLAN:
        rows = np.flatnonzero(rng.random(n) < share)
        k = len(rows)
        match kind:
            case "label":
                value = truth[rows]
            case "thumb":
                value = np.where(rng.random(k) < 0.8, 2 * truth[rows] - 1, 1 - 2 * truth[rows])
            case "rating":
                value = np.clip(np.round(rng.normal(2 + 2 * truth[rows], 1)), 1, 5)
            case "click":
                value = (rng.random(k) < 0.4).astype(float)
            case _:
                value = truth[rows]
        by_entity = rng.random(k) < ENTITY_ONLY_SHARE
        pid = preds["prediction_id"].to_numpy()[rows].astype(object)
        pid[by_entity] = None
        parts.append(
            pd.DataFrame(
                {
                    "prediction_id": pid,
                    "entity_id": preds["entity_id"].to_numpy()[rows],
                    "timestamp": stamps[rows]
                    + (rng.exponential(delay, k) * 1e9).astype("timedelta64[ns]"),
                    "kind": kind,
                    "value": value,
                }
            )
        )
    events = pd.concat(parts, ignore_index=True)
    orphans = rng.random(len(events)) < ORPHAN_SHARE
    events.loc[orphans, "prediction_id"] = "p-unknown"
    m = len(events)
    return pd.DataFrame(
        {
            "feedback_id": _ids("f", np.arange(m)),
            "prediction_id": pd.Series(events["prediction_id"], dtype=TEXT),
            "entity_id": pd.Series(events["entity_id"], dtype=TEXT),
            "timestamp": events["timestamp"].dt.tz_localize("UTC"),
            "kind": pd.Series(events["kind"], dtype=TEXT),
            "value": events["value"].astype(float),
            "text": pd.Series([None] * m, dtype=TEXT),
            "source": pd.Series(
                np.where(events["kind"].isin(["click", "conversion"]), "implicit", "explicit"),
                dtype=TEXT,
            ),
            "user_id": _ids("u", rng.integers(0, max(m // 20, 1), m)),
        }
    )
