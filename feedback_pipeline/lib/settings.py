"""Typed settings: how the user's logs look and how feedback turns into labels and metrics.

Settings come from one YAML file. Its path is read from ``FEEDBACK_PIPELINE_SETTINGS``; without
it the shipped demo settings (``feedback_pipeline/config/default.yaml``) are used. Any error in
the file is reported once, naming the key and what is wrong with it.
"""

import datetime as dt
import os
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SETTINGS_ENV = "FEEDBACK_PIPELINE_SETTINGS"
DATA_DIR_ENV = "FEEDBACK_PIPELINE_DATA_DIR"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> dt.timedelta:
    """Reads a duration written as ``90s``, ``30m``, ``1h``, ``7d`` or ``2w``."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    raise ValueError(f"expected a duration such as '1h' or '7d', got {value!r}")


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedbackKind(StrEnum):
    """The kinds of feedback the pipeline understands."""

    LABEL = "label"
    CORRECTION = "correction"
    THUMB = "thumb"
    RATING = "rating"
    CLICK = "click"
    CONVERSION = "conversion"
    DWELL = "dwell"
    COMMENT = "comment"


class ConflictRule(StrEnum):
    """How several events of one kind for one prediction become one value."""

    LATEST = "latest"
    EARLIEST = "earliest"
    MEAN = "mean"
    ANY = "any"
    MAX = "max"
    SUM = "sum"


class MissingFeedbackPolicy(StrEnum):
    """What a prediction without a label means for the metrics."""

    EXCLUDE = "exclude"
    NEGATIVE = "negative"
    ESTIMATE = "estimate"


class InferenceColumns(_Strict):
    """Names of the columns in the user's inference log."""

    prediction_id: str = "prediction_id"
    entity_id: str = "entity_id"
    timestamp: str = "timestamp"
    score: str = "score"
    predicted_label: str | None = None
    model_name: str = "model_name"
    model_version: str = "model_version"
    latency_ms: str = "latency_ms"
    segments: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    categorical_features: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_are_distinct(self) -> "InferenceColumns":
        names = [n for n in self.source_names().values() if n is not None]
        names += self.segments + self.features + self.categorical_features
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"column names used for more than one role: {repeated}")
        return self

    def source_names(self) -> dict[str, str | None]:
        """Maps each canonical single column to the user's name for it."""
        return {
            "prediction_id": self.prediction_id,
            "entity_id": self.entity_id,
            "timestamp": self.timestamp,
            "score": self.score,
            "predicted_label": self.predicted_label,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "latency_ms": self.latency_ms,
        }


class FeedbackColumns(_Strict):
    """Names of the columns in the user's feedback events."""

    feedback_id: str = "feedback_id"
    prediction_id: str = "prediction_id"
    entity_id: str = "entity_id"
    timestamp: str = "timestamp"
    kind: str = "kind"
    value: str = "value"
    text: str = "text"
    source: str = "source"
    user_id: str = "user_id"

    def source_names(self) -> dict[str, str]:
        """Maps each canonical column to the user's name for it."""
        return self.model_dump()


class FeedbackKindSettings(_Strict):
    """Attribution window and conflict rule of one kind of feedback."""

    window: Duration
    conflict: ConflictRule

    @field_validator("window")
    @classmethod
    def _positive(cls, value: dt.timedelta) -> dt.timedelta:
        if value <= dt.timedelta(0):
            raise ValueError("the attribution window must be longer than zero")
        return value


class Landing(_Strict):
    """Where new files arrive; local paths or any fsspec URL, relative ones under ``data_dir``."""

    inferences: str = "landing/inferences"
    feedback: str = "landing/feedback"


class QuarantineLimits(_Strict):
    """Share of quarantined rows per day above which the checks warn or fail."""

    warn_share: float = Field(default=0.02, ge=0, le=1)
    error_share: float = Field(default=0.10, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "QuarantineLimits":
        if self.warn_share > self.error_share:
            raise ValueError("warn_share must not be above error_share")
        return self


class DataQuality(_Strict):
    """Bounds of the day-level expectations, measured against the trailing days."""

    trailing_days: int = Field(default=7, ge=1)
    volume_tolerance: float = Field(default=0.5, gt=0)
    version_share_tolerance: float = Field(default=0.10, gt=0, le=1)
    score_tolerance: float = Field(default=0.10, gt=0, le=1)
    max_null_share: float = Field(default=0.05, ge=0, le=1)
    sample_rows: int = Field(default=100_000, ge=1000)
    min_label_share: float = Field(
        default=0.01, ge=0, le=1, description="share of class 1 among a day's labels, at least"
    )
    max_label_share: float = Field(default=0.99, ge=0, le=1)
    min_label_coverage: float = Field(
        default=0.05, ge=0, le=1, description="share of a final day's predictions with a label"
    )


class ReferenceWindow(_Strict):
    """The days whose data is the drift reference until a champion's training data replaces it.

    Their labeled predictions also calibrate the scores for estimated performance.
    """

    start: dt.date
    days: int = Field(default=7, ge=1)
    sample_rows: int = Field(
        default=100_000, ge=1000, description="rows of the reference kept, a seeded sample"
    )

    def dates(self) -> list[dt.date]:
        """The reference days, in order."""
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]


class QualityFlag(StrEnum):
    """Why a piece of feedback is suspect."""

    SUSPICIOUS_USER = "suspicious_user"  # a user whose volume or negativity is an outlier
    CONTRADICTORY = "contradictory"  # explicit feedback on one prediction that disagrees


class FeedbackQuality(_Strict):
    """How suspect feedback is found, and which of it metrics leave out."""

    min_user_events: int = Field(
        default=20,
        ge=2,
        description="a user is judged once they send this many thumbs and ratings a day",
    )
    max_volume_z: float = Field(
        default=5.0, gt=0, description="robust z-score of a user's log count of thumbs and ratings"
    )
    negativity_alpha: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="a user's negative share is an outlier if a binomial test against all "
        "users rejects at this level (Bonferroni-corrected for the number of users judged)",
    )
    coverage_tolerance: float = Field(
        default=0.5,
        gt=0,
        description="a slice's share of labels over its share of predictions may stray this far "
        "from 1 before it is flagged as biased",
    )
    min_coverage_rows: int = Field(default=100, ge=1)
    exclude: list[QualityFlag] = Field(
        default_factory=lambda: [QualityFlag.SUSPICIOUS_USER],
        description="flags whose feedback metrics leave out",
    )


class RuleMetric(StrEnum):
    """The numbers a retraining rule may watch."""

    ACCURACY = "accuracy"
    ROC_AUC = "roc_auc"
    F1 = "f1"
    ESTIMATED_ACCURACY = "estimated_accuracy"
    ESTIMATED_ROC_AUC = "estimated_roc_auc"
    DRIFT_SHARE = "drift_share"
    NEGATIVE_FEEDBACK_SHARE = "negative_feedback_share"
    NEW_LABELS = "new_labels"

    @property
    def higher_is_better(self) -> bool:
        """Whether a rise is an improvement: only a move the other way may fire a rule."""
        return self.value in {
            "accuracy",
            "roc_auc",
            "f1",
            "estimated_accuracy",
            "estimated_roc_auc",
        }


class RetrainingRule(_Strict):
    """One reason to retrain: a metric worse than a bound, or worse than the champion's baseline.

    Exactly one of ``below`` (for metrics where higher is better), ``above`` (for drift share,
    negative feedback share and new labels) or ``max_drop`` (a worsening against the champion's
    baseline, in the metric's units) is given. A rule fires only on a worsening, and only on at
    least ``min_samples`` samples: labels for realized metrics, predictions for estimated ones and
    drift, thumbs and ratings for negative feedback.
    """

    metric: RuleMetric
    below: float | None = None
    above: float | None = None
    max_drop: float | None = Field(default=None, gt=0)
    min_samples: int = Field(default=200, ge=1)
    final_only: bool = Field(
        default=False,
        description="judge only days whose labels are final: the first labels of a day are "
        "biased (corrections of wrong predictions come fastest)",
    )

    @model_validator(mode="after")
    def _one_bound_in_the_worsening_direction(self) -> "RetrainingRule":
        given = [k for k in ("below", "above", "max_drop") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of below, above or max_drop, got {given or 'none'}")
        if self.below is not None and not self.metric.higher_is_better:
            raise ValueError(f"{self.metric.value} worsens upwards: use above, not below")
        if self.above is not None and self.metric.higher_is_better:
            raise ValueError(f"{self.metric.value} worsens downwards: use below, not above")
        if self.max_drop is not None and self.metric == RuleMetric.NEW_LABELS:
            raise ValueError("new_labels has no baseline: use above")
        return self

    @property
    def name(self) -> str:
        """How the rule is called in skip reasons, tags and the demo summary."""
        kind = (
            "floor" if self.below is not None else "ceiling" if self.above is not None else "drop"
        )
        return f"{self.metric.value}_{kind}"


def _default_rules() -> list["RetrainingRule"]:
    return [
        RetrainingRule(metric=RuleMetric.ACCURACY, below=0.70, min_samples=200, final_only=True),
        RetrainingRule(metric=RuleMetric.ACCURACY, max_drop=0.05, min_samples=200, final_only=True),
        RetrainingRule(metric=RuleMetric.ESTIMATED_ACCURACY, max_drop=0.05, min_samples=1000),
        RetrainingRule(metric=RuleMetric.DRIFT_SHARE, above=0.5, min_samples=1000),
        RetrainingRule(metric=RuleMetric.NEGATIVE_FEEDBACK_SHARE, above=0.40, min_samples=200),
        RetrainingRule(metric=RuleMetric.NEGATIVE_FEEDBACK_SHARE, max_drop=0.04, min_samples=200),
    ]


class RetrainingPolicy(_Strict):
    """When feedback says the model has worsened enough to retrain, and how often it may."""

    rules: list[RetrainingRule] = Field(default_factory=_default_rules)
    cooldown: Duration = Field(
        default=dt.timedelta(days=3),
        description="no retraining for a breach day closer than this to the last retraining's",
    )

    @model_validator(mode="after")
    def _distinct(self) -> "RetrainingPolicy":
        names = [rule.name for rule in self.rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rules given twice: {repeated}")
        return self


class TrainingSettings(_Strict):
    """What a retraining learns from, and how the challenger is fitted."""

    days: int = Field(
        default=14, ge=1, description="most recent days of labeled predictions to train on"
    )
    holdout_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="the latest share of the rows (by prediction time) held out for the gate",
    )
    original_data: str | None = Field(
        default=None,
        description="Parquet file or folder of the original training data (features and label) "
        "added to the training rows; relative paths under data_dir",
    )
    max_iter: int = Field(default=300, ge=1, description="boosting iterations at most")
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(default=31, ge=2)
    validation_share: float = Field(
        default=0.1, gt=0, lt=1, description="rows the early stopping watches (validation loss)"
    )
    seed: int = 0


class PromotionMetric(StrEnum):
    """What the champion/challenger gate compares."""

    ACCURACY = "accuracy"
    ROC_AUC = "roc_auc"


class PromotionSettings(_Strict):
    """The champion/challenger gate: better by a margin, on enough rows, significantly."""

    metric: PromotionMetric = PromotionMetric.ACCURACY
    margin: float = Field(
        default=0.01, ge=0, description="the challenger must be at least this much better"
    )
    min_samples: int = Field(default=500, ge=10, description="holdout rows the gate needs")
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="the one-sided paired-bootstrap interval of the gain must exclude zero at "
        "this level",
    )
    n_resamples: int = Field(default=2000, ge=100)
    seed: int = 0


class LabelingQueue(_Strict):
    """The daily list of predictions whose labels would teach the model most."""

    per_day: int = Field(default=200, ge=1)
    stratify_by: list[str] | None = Field(
        default=None, description="columns the queue is spread over (unset: the segments)"
    )
    directory: str = "labeling_queue"


class CostMatrix(_Strict):
    """Business value of each outcome of one prediction, in the user's currency."""

    true_positive: float = 0.0
    false_positive: float = 0.0
    true_negative: float = 0.0
    false_negative: float = 0.0


class Reports(_Strict):
    """Evidently reports: where they go, and how many rows they read."""

    directory: str = "reports"
    workspace: str = "evidently"
    sample_rows: int = Field(
        default=20_000,
        ge=1000,
        description="rows of a day (per model version) and of the reference a report reads at "
        "most: a seeded sample, so a 10M-row day costs what a 100k-row day does",
    )
    seed: int = 0
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        strict=True,
        description="model versions whose reports are drawn at once, each in a process forked "
        "from the step; unset: one per core; 1: one after the other in the step's process",
    )


class Tracking(_Strict):
    """Where MLflow keeps monitoring runs and models."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; unset: MLFLOW_TRACKING_URI, else a SQLite store "
        "under the data directory",
    )
    artifact_location: str = Field(
        default="mlflow/artifacts",
        description="where new experiments keep their artifacts (relative: under data_dir)",
    )

    def uri(self, settings: "Settings") -> str:
        """The tracking URI in force."""
        if self.tracking_uri:
            return self.tracking_uri
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env:
            return from_env
        return f"sqlite:///{settings.resolve('mlflow/mlflow.db')}"


class Privacy(_Strict):
    """Columns whose values never leave the pipeline raw (see ``lib/privacy.py``)."""

    personal_columns: list[str] = Field(
        default_factory=list,
        description="canonical column names (e.g. entity_id, user_id) hashed with a keyed hash "
        "in everything the pipeline exports: dashboard, labeling queue, Dagster metadata and logs",
    )
    key_env: str = Field(
        default="FEEDBACK_PIPELINE_HASH_KEY",
        description="environment variable holding the hashing key (never a file)",
    )


class Settings(_Strict):
    """Everything the pipeline needs to know about the user's model and feedback."""

    model_name: str
    start_date: dt.date
    data_dir: str = "data"
    landing: Landing = Landing()
    inference_columns: InferenceColumns
    feedback_columns: FeedbackColumns = FeedbackColumns()
    segment_values: dict[str, list[str]] = Field(default_factory=dict)
    categorical_values: dict[str, list[str]] = Field(default_factory=dict)
    feedback_kinds: dict[FeedbackKind, FeedbackKindSettings]
    label_kinds: list[FeedbackKind] = Field(
        default_factory=lambda: [FeedbackKind.CORRECTION, FeedbackKind.LABEL]
    )
    missing_feedback_policy: MissingFeedbackPolicy = MissingFeedbackPolicy.EXCLUDE
    score_cutoff: float = Field(default=0.5, gt=0, lt=1)
    max_clock_skew: Duration = dt.timedelta(hours=1)
    dedupe_lookback_days: int = Field(default=30, ge=0)
    quarantine: QuarantineLimits = QuarantineLimits()
    data_quality: DataQuality = DataQuality()
    feedback_quality: FeedbackQuality = FeedbackQuality()
    reference_window: ReferenceWindow
    retraining: RetrainingPolicy = RetrainingPolicy()
    training: TrainingSettings = TrainingSettings()
    promotion: PromotionSettings = PromotionSettings()
    labeling_queue: LabelingQueue = LabelingQueue()
    costs: CostMatrix = CostMatrix()
    reports: Reports = Reports()
    tracking: Tracking = Tracking()
    privacy: Privacy = Privacy()

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        missing = [k.value for k in self.label_kinds if k not in self.feedback_kinds]
        if missing:
            raise ValueError(f"label_kinds {missing} have no entry under feedback_kinds")
        if not self.label_kinds:
            raise ValueError("label_kinds must name at least one kind")
        blurred = [
            k.value
            for k in self.label_kinds
            if self.feedback_kinds[k].conflict in (ConflictRule.MEAN, ConflictRule.SUM)
        ]
        if blurred:
            raise ValueError(
                f"label kinds {blurred} need a conflict rule that keeps a class (latest, "
                "earliest, max or any): mean and sum of labels are not a label"
            )
        unknown = sorted(set(self.segment_values) - set(self.inference_columns.segments))
        if unknown:
            raise ValueError(f"segment_values names columns that are not segments: {unknown}")
        columns = self.inference_columns
        known = set(columns.segments + columns.categorical_features + columns.features)
        strata = sorted(set(self.labeling_queue.stratify_by or []) - known)
        if strata:
            raise ValueError(f"labeling_queue.stratify_by names unknown columns: {strata}")
        return self

    @property
    def label_window(self) -> dt.timedelta:
        """The longest window of the kinds that give labels: after it a day's labels are final."""
        return max(self.feedback_kinds[k].window for k in self.label_kinds)

    @property
    def longest_window(self) -> dt.timedelta:
        """The longest attribution window of any kind."""
        return max(k.window for k in self.feedback_kinds.values())

    @property
    def window_days(self) -> int:
        """How many days after its own a prediction day can still receive feedback."""
        return -(-self.longest_window // dt.timedelta(days=1))

    def resolve(self, path: str) -> str:
        """Resolves a configured location against ``data_dir`` unless it is absolute or a URL."""
        if "://" in path or Path(path).is_absolute():
            return path
        return f"{self.data_root}/{path}"

    @property
    def data_root(self) -> str:
        """The data directory: ``FEEDBACK_PIPELINE_DATA_DIR`` if set, else ``data_dir``."""
        root = os.environ.get(DATA_DIR_ENV) or self.data_dir
        return root if "://" in root else str(Path(root).resolve())


class SettingsError(ValueError):
    """The settings file cannot be used; the message names the file, the key and the problem."""


def default_settings_path() -> Path:
    """The demo settings shipped with the package."""
    return Path(str(resources.files("feedback_pipeline") / "config" / "default.yaml"))


def settings_path() -> Path:
    """The settings file in force: ``FEEDBACK_PIPELINE_SETTINGS`` or the shipped default."""
    configured = os.environ.get(SETTINGS_ENV)
    return Path(configured) if configured else default_settings_path()


def load_settings(path: str | Path | None = None) -> Settings:
    """Loads and checks the settings file, raising one ``SettingsError`` for any problem."""
    path = Path(path) if path is not None else settings_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not a UTF-8 text file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise SettingsError(f"{path}: " + "; ".join(problems)) from None


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling)"
    elif error["type"] != "missing" and not isinstance(error.get("input"), dict | list):
        message += f" (got {error.get('input')!r})"
    return f"{key}: {message}"
