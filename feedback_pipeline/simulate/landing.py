"""Writes simulated traffic into the landing zone the way real systems deliver it.

Predictions arrive as Parquet, CSV and JSON Lines parts under the user's own column names; feedback
arrives on the day it was received, one format per source system (labels from the CRM as CSV, app
feedback as JSON Lines, behavioural events as Parquet). About 1% of the rows are dirty in the ways
production logs are, one file is truncated and one is delivered twice.
"""

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict

import fsspec
import numpy as np
import pandas as pd

from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.simulate.traffic import (
    Serving,
    SimulationConfig,
    build_world,
    simulate_day,
)

TRUNCATED_DAY = 5
REDELIVERED_DAY = 8
# Where each kind of feedback comes from, and in which format that system writes.
FEEDBACK_SOURCES = {
    "crm": (["label", "correction"], "csv"),
    "app": (["thumb", "rating", "comment"], "jsonl"),
    "events": (["click", "dwell", "conversion"], "parquet"),
}


class LandingSimulation:
    """Writes the landing zone one day at a time, as the serving and feedback systems would.

    ``write_day(i)`` writes day ``i``'s predictions and every feedback event received on that day
    (from its own predictions and earlier ones); later feedback waits for its day. Between two
    days the serving may change (a new champion), which is how the demo closes the loop.
    """

    def __init__(self, settings: Settings, config: SimulationConfig) -> None:
        self.settings, self.config = settings, config
        self.world = build_world(config)
        self.rng = np.random.default_rng(config.seed + 1)
        self.truths: list[pd.DataFrame] = []
        self.pending: list[pd.DataFrame] = []
        self.n_feedback = 0
        self.previous: pd.DataFrame | None = None
        self.end = pd.Timestamp(config.day(config.days), tz="UTC")

    def write_day(self, index: int, serving: Serving | None = None) -> None:
        """Simulates day ``index`` and writes its files and the feedback received on it."""
        config, settings = self.config, self.settings
        predictions, feedback = simulate_day(config, self.world, index, serving)
        self.truths.append(predictions[["prediction_id", "model_version", "score", "true_label"]])
        self.pending.append(feedback[feedback["timestamp"] < self.end])
        day_dir = (
            f"{settings.resolve(settings.landing.inferences)}/date={config.day(index):%Y-%m-%d}"
        )
        redelivered = self.previous if index == REDELIVERED_DAY + 1 else None
        self.previous = _write_inferences(
            settings,
            predictions.drop(columns="true_label"),
            day_dir,
            self.rng,
            config,
            index,
            redelivered,
        )
        waiting = pd.concat(self.pending, ignore_index=True)
        received = waiting["timestamp"].dt.date == config.day(index)
        self.pending = [waiting[~received]]
        events = waiting[received]
        if len(events):
            self.n_feedback += len(events)
            root = settings.resolve(settings.landing.feedback)
            _write_feedback(settings, events, f"{root}/date={config.day(index):%Y-%m-%d}", self.rng)

    def finish(self) -> dict:
        """Writes the hidden truth and the incident manifest; returns the manifest."""
        config = self.config
        sim_dir = self.settings.resolve("simulation")
        fs, root = fsspec.core.url_to_fs(sim_dir)
        fs.makedirs(root, exist_ok=True)
        pd.concat(self.truths, ignore_index=True).to_parquet(
            f"{sim_dir}/truth.parquet", index=False
        )
        manifest = {
            "config": {
                k: str(v) if isinstance(v, dt.date) else v for k, v in asdict(config).items()
            },
            "incidents": {
                "covariate_drift_from": str(config.day(config.covariate_drift_day)),
                "concept_drift_from": str(config.day(config.concept_drift_day)),
                "latency_regression_from": str(config.day(config.latency_regression_day)),
                "latency_regression_version": config.latency_regression_version,
                "spam_days": [str(config.day(d)) for d in config.spam_days],
                "truncated_file_day": str(config.day(TRUNCATED_DAY)),
                "redelivered_file_day": str(config.day(REDELIVERED_DAY + 1)),
            },
            "predictions": int(sum(len(t) for t in self.truths)),
            "feedback_events": self.n_feedback,
        }
        fs.pipe_file(f"{root}/manifest.json", json.dumps(manifest, indent=2).encode())
        return manifest


def simulate_landing(settings: Settings, config: SimulationConfig) -> dict:
    """Simulates every day, writes the landing zone and returns the incident manifest."""
    simulation = LandingSimulation(settings, config)
    for index in range(config.days):
        simulation.write_day(index)
    return simulation.finish()


def _to_user_names(frame: pd.DataFrame, mapping: Mapping[str, str | None]) -> pd.DataFrame:
    return frame.rename(columns={k: v for k, v in mapping.items() if v and k in frame})


def _write_inferences(
    settings: Settings,
    predictions: pd.DataFrame,
    day_dir: str,
    rng: np.random.Generator,
    config: SimulationConfig,
    index: int,
    redelivered: pd.DataFrame | None,
) -> pd.DataFrame:
    """Writes one day's parts and returns its JSON Lines part, which a later day receives again."""
    frame = _to_user_names(predictions, settings.inference_columns.source_names())
    cols = settings.inference_columns
    n = len(frame)
    cut1, cut2 = int(n * 0.6), int(n * 0.85)
    parts = {
        "parquet": frame.iloc[:cut1].copy(),
        "csv": frame.iloc[cut1:cut2].copy(),
        "jsonl": frame.iloc[cut2:].copy(),
    }
    for fmt, part in parts.items():
        _dirty_inferences(part, cols, rng, config.dirty_share, text=fmt != "parquet")
    if redelivered is not None:
        parts["redelivered.jsonl"] = redelivered
    fs, root = fsspec.core.url_to_fs(day_dir)
    fs.makedirs(root, exist_ok=True)
    for fmt, part in parts.items():
        _write(part, f"{day_dir}/part-0.{fmt}" if "." not in fmt else f"{day_dir}/{fmt}")
    if index == TRUNCATED_DAY:
        path = f"{day_dir}/part-1.parquet"
        _write(frame.sample(n=min(200, n), random_state=index), path)
        fs, location = fsspec.core.url_to_fs(path)
        blob = fs.cat_file(location)
        fs.pipe_file(location, blob[: len(blob) // 2])
    return parts["jsonl"]


def _dirty_inferences(part, cols, rng, share, *, text: bool) -> None:
    """Corrupts about ``share`` of the rows in place, each in one way."""
    picks = np.flatnonzero(rng.random(len(part)) < share)
    corruptions = [
        (cols.prediction_id, None),
        (cols.entity_id, None),
        (cols.score, None),
        (cols.score, 1.7),
        (cols.score, -0.3),
        (cols.latency_ms, -12.0),
        (cols.segments[0], "XX"),
        (cols.segments[-1], "smart-fridge"),
        (cols.timestamp, pd.Timestamp("2099-01-01", tz="UTC")),
        ("duplicate", None),
    ]
    if text:
        corruptions += [(cols.timestamp, "yesterday afternoon"), (cols.features[0], "n/a")]
    if text and len(part):
        part[cols.timestamp] = part[cols.timestamp].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
        part[cols.features[0]] = part[cols.features[0]].astype(object)
    if not len(part):
        return
    for row, choice in zip(
        picks.tolist(), rng.integers(0, len(corruptions), len(picks)), strict=True
    ):
        column, value = corruptions[choice]
        if column == "duplicate":
            other = int(rng.integers(0, len(part)))
            part.iloc[row, part.columns.get_loc(cols.prediction_id)] = part.iloc[other][
                cols.prediction_id
            ]
            continue
        if text and isinstance(value, pd.Timestamp):
            value = "2099-01-01 00:00:00"
        part.iloc[row, part.columns.get_loc(column)] = value


def _write_feedback(
    settings: Settings, events: pd.DataFrame, day_dir: str, rng: np.random.Generator
) -> None:
    fs, root = fsspec.core.url_to_fs(day_dir)
    fs.makedirs(root, exist_ok=True)
    for system, (kinds, fmt) in FEEDBACK_SOURCES.items():
        part = events[events["kind"].isin(kinds)].copy()
        if part.empty:
            continue
        _dirty_feedback(part, rng, text=fmt != "parquet")
        part = _to_user_names(part, settings.feedback_columns.source_names())
        _write(part, f"{day_dir}/{system}.{fmt}")


def _dirty_feedback(part: pd.DataFrame, rng: np.random.Generator, *, text: bool) -> None:
    picks = np.flatnonzero(rng.random(len(part)) < 0.005)
    corruptions = [
        ("kind", "emoji"),
        ("value", 9.0),
        ("prediction_id", None),
        ("duplicate", None),
    ]
    if text:
        part["timestamp"] = part["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z")
        corruptions.append(("timestamp", "not a time"))
    for row, choice in zip(
        picks.tolist(), rng.integers(0, len(corruptions), len(picks)), strict=True
    ):
        column, value = corruptions[choice]
        if column == "duplicate":
            # The same event delivered twice: an exact copy of another row.
            other = int(rng.integers(0, len(part)))
            part.loc[part.index[row]] = part.loc[part.index[other]]
        elif column == "prediction_id":
            part.loc[part.index[row], ["prediction_id", "entity_id"]] = None
        else:
            part.loc[part.index[row], column] = value


def _write(frame: pd.DataFrame, path: str) -> None:
    if path.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif path.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")
