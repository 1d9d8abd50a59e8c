"""Synthetic production traffic of a binary classifier, with its feedback and its incidents.

A conversion-propensity model scores customers; two versions run on an A/B split. The world it
lives in changes: from ``covariate_drift_day`` some inputs shift, from ``concept_drift_day`` the
relation between inputs and outcome changes (the models do not know), and from
``latency_regression_day`` one version gets slow. Feedback of every kind follows from what really
happened: labels arrive late and for a minority, thumbs and ratings depend on whether the model was
right, clicks fall as latency rises. Everything is drawn from one seeded generator.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FEATURES = [
    "tenure_days",
    "sessions_7d",
    "sessions_30d",
    "avg_session_minutes",
    "pages_per_session",
    "cart_adds_7d",
    "cart_value",
    "days_since_last_purchase",
    "orders_90d",
    "avg_order_value",
    "discount_share",
    "support_tickets_30d",
    "email_open_rate",
    "push_opt_in",
    "wishlist_items",
    "search_count_7d",
    "returns_90d",
    "loyalty_points",
    "page_load_ms",
    "account_age_days",
]
COUNTRIES = ["US", "DE", "FR", "GB", "BR", "IN", "JP"]
PLATFORMS = ["ios", "android", "web"]
PLANS = ["free", "plus", "pro"]
CHANNELS = ["organic", "paid_search", "social", "referral", "email"]
VERSIONS = ("v1", "v2")
# Inputs that move under the covariate drift, and by how many standard deviations.
DRIFTING = {"sessions_7d": 0.9, "cart_adds_7d": 0.7, "discount_share": 1.0, "page_load_ms": 0.8}
COMMENTS_BAD = [
    "These offers have nothing to do with me.",
    "Why do you keep pushing this? Not interested at all.",
    "Terrible suggestion, and the app was so slow today.",
    "Wrong again. Please fix your recommendations.",
]
COMMENTS_GOOD = [
    "Great deal, exactly what I was looking for!",
    "Thanks, this was helpful.",
    "Love the personalised offer.",
]

Scorer = Callable[[str, pd.DataFrame], np.ndarray]


class Serving:
    """Which model version serves each request, and the score it gives.

    The built-in serving is the A/B split of the two deployed versions (``v1`` for even customer
    numbers, ``v2`` for odd ones). A registered model can take all the traffic instead: give its
    label and a scorer of the logged inputs.
    """

    def __init__(self, scorer: Scorer | None = None, label: str | None = None) -> None:
        self.scorer, self.label = scorer, label

    def versions(self, entity: np.ndarray) -> np.ndarray:
        """The version label of each request."""
        if self.label is not None:
            return np.full(len(entity), self.label, dtype=object)
        return np.where(entity % 2 == 0, VERSIONS[0], VERSIONS[1])

    def score(self, world: "World", version: str, rows: pd.DataFrame) -> np.ndarray:
        """Scores of the requests one version serves (logged and standardised ``z_`` inputs)."""
        return (self.scorer or built_in_scorer(world))(version, rows)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; the same config and seed always give the same traffic."""

    start_date: dt.date
    days: int = 30
    rows_per_day: int = 4000
    seed: int = 7
    covariate_drift_day: int = 10
    concept_drift_day: int = 18
    latency_regression_day: int = 14
    latency_regression_version: str = "v2"
    spam_days: tuple[int, ...] = (12, 13)
    dirty_share: float = 0.01
    label_share: float = 0.35

    def day(self, index: int) -> dt.date:
        """The calendar date of simulated day ``index`` (0-based)."""
        return self.start_date + dt.timedelta(days=index)


@dataclass
class World:
    """The hidden truth the simulation draws from: customers and how they decide."""

    rng: np.random.Generator
    n_entities: int
    entity_country: np.ndarray
    entity_platform: np.ndarray
    entity_plan: np.ndarray
    entity_channel: np.ndarray
    entity_latent: np.ndarray
    weights_before: np.ndarray
    weights_after: np.ndarray
    model_weights: dict[str, np.ndarray] = field(default_factory=dict)


def build_world(config: SimulationConfig) -> World:
    """Draws the customers and the true and the models' view of how they decide."""
    rng = np.random.default_rng(config.seed)
    n = max(500, config.rows_per_day * 2)
    before = rng.normal(0, 1, len(FEATURES)) * np.linspace(1.1, 0.1, len(FEATURES))
    after = before.copy()
    # The concept drift: the strongest signals stop meaning what they meant.
    after[[0, 1, 2, 3]] = -1.0 * before[[0, 1, 2, 3]]
    after[[5, 7]] = before[[5, 7]] + 0.8
    return World(
        rng=rng,
        n_entities=n,
        entity_country=rng.choice(COUNTRIES, n, p=[0.35, 0.15, 0.1, 0.12, 0.1, 0.12, 0.06]),
        entity_platform=rng.choice(PLATFORMS, n, p=[0.4, 0.35, 0.25]),
        entity_plan=rng.choice(PLANS, n, p=[0.6, 0.3, 0.1]),
        entity_channel=rng.choice(CHANNELS, n),
        entity_latent=rng.normal(0, 0.8, (n, len(FEATURES))),
        weights_before=before,
        weights_after=after,
        model_weights={
            "v1": before + rng.normal(0, 0.30, len(FEATURES)),
            "v2": before + rng.normal(0, 0.12, len(FEATURES)),
        },
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _to_units(z: np.ndarray) -> dict[str, np.ndarray]:
    """Turns standardised inputs into values on the scale a real log would show."""
    f = dict(zip(FEATURES, z.T, strict=True))
    return {
        "tenure_days": np.round(np.exp(5.5 + 0.8 * f["tenure_days"])),
        "sessions_7d": np.round(np.exp(1.5 + 0.6 * f["sessions_7d"])),
        "sessions_30d": np.round(np.exp(2.8 + 0.5 * f["sessions_30d"])),
        "avg_session_minutes": np.exp(1.8 + 0.4 * f["avg_session_minutes"]),
        "pages_per_session": np.exp(1.4 + 0.3 * f["pages_per_session"]),
        "cart_adds_7d": np.round(np.exp(0.5 + 0.7 * f["cart_adds_7d"])),
        "cart_value": np.exp(3.8 + 0.7 * f["cart_value"]),
        "days_since_last_purchase": np.round(np.exp(3.2 - 0.8 * f["days_since_last_purchase"])),
        "orders_90d": np.round(np.exp(0.8 + 0.6 * f["orders_90d"])),
        "avg_order_value": np.exp(4.0 + 0.5 * f["avg_order_value"]),
        "discount_share": _sigmoid(-1.0 + f["discount_share"]),
        "support_tickets_30d": np.round(np.exp(-0.5 + 0.7 * f["support_tickets_30d"])),
        "email_open_rate": _sigmoid(-0.5 + 0.9 * f["email_open_rate"]),
        "push_opt_in": (f["push_opt_in"] > 0).astype(float),
        "wishlist_items": np.round(np.exp(1.0 + 0.8 * f["wishlist_items"])),
        "search_count_7d": np.round(np.exp(1.7 + 0.6 * f["search_count_7d"])),
        "returns_90d": np.round(np.exp(-0.7 + 0.7 * f["returns_90d"])),
        "loyalty_points": np.round(np.exp(6.0 + 0.9 * f["loyalty_points"])),
        "page_load_ms": np.exp(6.5 + 0.3 * f["page_load_ms"]),
        "account_age_days": np.round(np.exp(6.0 + 0.7 * f["account_age_days"])),
    }


def built_in_scorer(world: World) -> Scorer:
    """The two deployed versions: each knows the world as it was, v2 a little better than v1."""

    def score(version: str, frame: pd.DataFrame) -> np.ndarray:
        z = frame[[f"z_{name}" for name in FEATURES]].to_numpy()
        noise = world.rng.normal(0, 0.35, len(frame))
        return _sigmoid(-0.9 + z @ world.model_weights[version] + noise)

    return score


def simulate_day(
    config: SimulationConfig, world: World, index: int, serving: Serving | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns one day's predictions (with the hidden truth) and all the feedback they cause."""
    serving = serving or Serving()
    rng, n = world.rng, config.rows_per_day
    day_start = pd.Timestamp(config.day(index), tz="UTC")
    # A few customers are very active: entity choice follows a Zipf-like law.
    entity = rng.integers(0, world.n_entities, n)
    heavy = rng.random(n) < 0.15
    entity[heavy] = (rng.zipf(1.3, heavy.sum()) * 7919) % world.n_entities
    z = world.entity_latent[entity] + rng.normal(0, 0.6, (n, len(FEATURES)))
    country = world.entity_country[entity].copy()
    if index >= config.covariate_drift_day:
        for name, shift in DRIFTING.items():
            z[:, FEATURES.index(name)] += shift
        moved = rng.random(n) < 0.25
        country[moved] = rng.choice(["BR", "IN"], moved.sum())
    weights = world.weights_after if index >= config.concept_drift_day else world.weights_before
    truth = (rng.random(n) < _sigmoid(-0.9 + z @ weights)).astype(np.int8)

    units = {name: np.round(values, 4) for name, values in _to_units(z).items()}
    platform = world.entity_platform[entity]
    device = np.where(
        platform == "web", "desktop", np.where(rng.random(n) < 0.2, "tablet", "phone")
    )
    inputs = pd.DataFrame(
        {
            **{f"z_{name}": z[:, i] for i, name in enumerate(FEATURES)},
            **units,
            "plan": world.entity_plan[entity],
            "acquisition_channel": world.entity_channel[entity],
            "device_class": device,
        }
    )
    version = serving.versions(entity)
    score = np.empty(n)
    for v in pd.unique(version):
        mask = version == v
        score[mask] = serving.score(world, str(v), inputs[mask])
    slow = 2.6 if index >= config.latency_regression_day else 1.0
    latency = rng.lognormal(np.log(np.where(version == "v1", 85.0, 70.0)), 0.35, n)
    latency[version == config.latency_regression_version] *= slow

    seconds = np.sort(rng.uniform(0, 86400 - 1e-3, n))
    predictions = pd.DataFrame(
        {
            "prediction_id": [f"p-{config.day(index):%Y%m%d}-{i:07d}" for i in range(n)],
            "entity_id": [f"c-{e:06d}" for e in entity],
            "timestamp": day_start + pd.to_timedelta(seconds, unit="s"),
            "model_name": "conversion_propensity",
            "model_version": version.astype(str),
            "score": np.round(score, 6),
            "latency_ms": np.round(latency, 2),
            "country": country,
            "platform": platform,
            "plan": world.entity_plan[entity],
            "acquisition_channel": world.entity_channel[entity],
            "device_class": device,
            **units,
            "true_label": truth,
        }
    )
    return predictions, _feedback(config, world, predictions, index)


def _feedback(
    config: SimulationConfig, world: World, predictions: pd.DataFrame, index: int
) -> pd.DataFrame:
    rng, n = world.rng, len(predictions)
    truth = predictions["true_label"].to_numpy()
    correct = (predictions["score"].to_numpy() >= 0.5).astype(np.int8) == truth
    latency = predictions["latency_ms"].to_numpy()
    parts: list[pd.DataFrame] = []

    def emit(
        kind: str,
        mask: np.ndarray,
        value,
        median_s: float,
        sigma: float,
        *,
        by_id: bool,
        source: str,
        text=None,
    ) -> np.ndarray:
        delay = rng.lognormal(np.log(median_s), sigma, n)
        rows = predictions.loc[mask, ["prediction_id", "entity_id", "timestamp"]]
        values = np.broadcast_to(np.asarray(value, dtype=float), (n,))[mask]
        parts.append(
            pd.DataFrame(
                {
                    "prediction_id": rows["prediction_id"].to_numpy() if by_id else None,
                    "entity_id": rows["entity_id"].to_numpy(),
                    "timestamp": rows["timestamp"] + pd.to_timedelta(delay[mask], unit="s"),
                    "kind": kind,
                    "value": values,
                    "text": None if text is None else np.asarray(text, dtype=object)[mask],
                    "source": source,
                    "user_id": "u-" + rows["entity_id"].str[2:],
                }
            )
        )
        return delay

    emit(
        "label",
        rng.random(n) < config.label_share,
        truth,
        1.5 * 86400,
        0.9,
        by_id=True,
        source="explicit",
    )
    emit(
        "correction",
        ~correct & (rng.random(n) < 0.06),
        truth,
        12 * 3600,
        0.7,
        by_id=True,
        source="explicit",
    )
    thumbs_up = rng.random(n) < np.where(correct, 0.85, 0.3)
    emit(
        "thumb",
        rng.random(n) < 0.15,
        np.where(thumbs_up, 1, -1),
        300,
        1.2,
        by_id=True,
        source="explicit",
    )
    rating = np.clip(np.round(rng.normal(np.where(correct, 4.3, 2.4), 0.8)), 1, 5)
    emit("rating", rng.random(n) < 0.08, rating, 1800, 1.0, by_id=True, source="explicit")
    impression = rng.random(n) < 0.6
    clicked = rng.random(n) < np.clip(0.4 * np.exp(-(latency - 75) / 250), 0.02, 0.6)
    click_delay = emit(
        "click", impression, clicked.astype(float), 120, 1.5, by_id=False, source="implicit"
    )
    dwell = rng.lognormal(np.log(40), 0.8, n)
    emit("dwell", impression & clicked, dwell.round(1), 1, 0.01, by_id=False, source="implicit")
    parts[-1]["timestamp"] += pd.to_timedelta((click_delay + dwell)[impression & clicked], "s")
    emit(
        "conversion",
        (truth == 1) & (rng.random(n) < 0.7),
        1.0,
        86400,
        0.8,
        by_id=False,
        source="implicit",
    )
    unhappy = ~correct | (latency > 150)
    text = np.where(unhappy, rng.choice(COMMENTS_BAD, n), rng.choice(COMMENTS_GOOD, n))
    emit(
        "comment",
        rng.random(n) < np.where(unhappy, 0.03, 0.01),
        np.nan,
        7200,
        1.0,
        by_id=True,
        source="explicit",
        text=text,
    )
    if index in config.spam_days:
        parts.append(_spam(rng, predictions))
    feedback = pd.concat(parts, ignore_index=True)
    feedback.insert(
        0, "feedback_id", [f"f-{config.day(index):%Y%m%d}-{i:08d}" for i in range(len(feedback))]
    )
    return feedback


def _spam(rng: np.random.Generator, predictions: pd.DataFrame) -> pd.DataFrame:
    """One bot hammering thumbs-down on a random sample of the day's predictions."""
    rows = predictions.sample(
        n=min(400, len(predictions)), random_state=int(rng.integers(1_000_000_000))
    )
    return pd.DataFrame(
        {
            "prediction_id": rows["prediction_id"].to_numpy(),
            "entity_id": rows["entity_id"].to_numpy(),
            "timestamp": rows["timestamp"] + pd.to_timedelta(rng.uniform(1, 60, len(rows)), "s"),
            "kind": "thumb",
            "value": -1.0,
            "text": None,
            "source": "explicit",
            "user_id": "u-bot-4242",
        }
    )
