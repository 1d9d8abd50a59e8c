"""The data contracts: pandera models of the inference log and the feedback events.

The models hold what is true of every deployment; ``inference_schema`` and ``feedback_schema`` add
what the settings say (feature and segment columns, their allowed values, the day's time bound).
Validation is lazy: every failing row is found in one pass and becomes a quarantine row.
"""

import datetime as dt
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandera.typing import Series

from feedback_pipeline.lib.settings import FeedbackKind, Settings

UTC = pd.DatetimeTZDtype("ns", "UTC")
# Strings are Arrow-backed: far less memory than Python objects, and vectorised checks.
Text = Annotated[pd.StringDtype, "pyarrow", pd.NA]
TEXT = pd.StringDtype("pyarrow")


def arrow_text(values: pd.Index | pd.Series) -> pa_arrow.ChunkedArray:
    """The values as Arrow strings (without a copy if they are Arrow-backed text already)."""
    return pa_arrow.chunked_array(pa_arrow.array(pd.Series(values, dtype=TEXT, copy=False).array))


def categorical(codes: np.ndarray, categories: Sequence[str]) -> pd.Categorical:
    """Strings from small integer codes (-1 is missing): cheap to build, to store and to compare."""
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories))  # pyright: ignore[reportArgumentType]


# Allowed values of ``value`` per kind of feedback.
VALUE_RULES: dict[str, tuple[str, object]] = {
    "label": ("in", (0.0, 1.0)),
    "correction": ("in", (0.0, 1.0)),
    "click": ("in", (0.0, 1.0)),
    "conversion": ("in", (0.0, 1.0)),
    "thumb": ("in", (-1.0, 1.0)),
    "rating": ("range", (1.0, 5.0)),
    "dwell": ("range", (0.0, np.inf)),
    # A comment's value is a sentiment score, derived from its text unless the source gave one.
    "comment": ("range_or_missing", (-1.0, 1.0)),
}


# The column a failing row-level (dataframe) check is about, for quarantine messages.
ROW_CHECK_COLUMNS = {
    "has_prediction_or_entity_id": "prediction_id",
    "value_in_range_for_kind": "value",
}
# The columns the row-level checks read.
ROW_CHECK_INPUTS = ["prediction_id", "entity_id", "kind", "value"]


class InferenceLog(pa.DataFrameModel):
    """One row per prediction the model served."""

    prediction_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    entity_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    timestamp: Series[UTC]  # type: ignore[valid-type]
    model_name: Series[Text]
    model_version: Series[Text]
    score: Series[float] = pa.Field(ge=0.0, le=1.0)
    predicted_label: Series[pd.Int8Dtype] = pa.Field(isin=[0, 1], nullable=True)
    latency_ms: Series[float] = pa.Field(ge=0.0, lt=float("inf"), nullable=True)

    class Config(pa.DataFrameModel.Config):
        """Coerce types on the way in; extra configured columns are added per deployment."""

        coerce = True


class FeedbackEvent(pa.DataFrameModel):
    """One row per piece of feedback, explicit or implicit."""

    feedback_id: Series[Text] = pa.Field(str_length={"min_value": 1})
    prediction_id: Series[Text] = pa.Field(nullable=True)
    entity_id: Series[Text] = pa.Field(nullable=True)
    timestamp: Series[UTC]  # type: ignore[valid-type]
    kind: Series[Text] = pa.Field(isin=[k.value for k in FeedbackKind])
    value: Series[float] = pa.Field(nullable=True)
    text: Series[Text] = pa.Field(nullable=True)
    source: Series[Text] = pa.Field(isin=["explicit", "implicit"], nullable=True)
    user_id: Series[Text] = pa.Field(nullable=True)

    class Config(pa.DataFrameModel.Config):
        """Coerce types on the way in."""

        coerce = True

    @pa.dataframe_check(name="has_prediction_or_entity_id")
    @classmethod
    def has_a_target(cls, df: pd.DataFrame) -> pd.Series:
        """Feedback must say which prediction or which entity it is about (blanks do not).

        Arrow's kernels judge the strings where they are: stripping the ids to compare them with
        the empty string copied every one of them (1.2 s for a day of 17M events, against 0.55 s).
        """
        present = np.zeros(len(df), dtype=bool)
        for name in ("prediction_id", "entity_id"):
            ids = arrow_text(df[name])
            empty = pc.equal(pc.binary_length(ids), 0)  # pyright: ignore[reportAttributeAccessIssue]
            spaces = pc.utf8_is_space(ids)  # pyright: ignore[reportAttributeAccessIssue]
            blank = pc.or_kleene(empty, spaces).fill_null(True)  # pyright: ignore[reportAttributeAccessIssue]
            present |= ~blank.to_numpy()
        return pd.Series(present, index=df.index)

    @pa.dataframe_check(name="value_in_range_for_kind")
    @classmethod
    def value_fits_kind(cls, df: pd.DataFrame) -> pd.Series:
        """Each kind has its own allowed values (thumbs are -1/+1, ratings 1..5, ...).

        Judged on the values as one array, each kind's rows picked out by a mask: selecting
        them with ``.loc`` per kind took 1.8 s for a day of 17M events, against 0.45 s.
        """
        value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ok = np.ones(len(df), dtype=bool)
        for kind, (rule, bounds) in VALUE_RULES.items():
            rows = (df["kind"] == kind).to_numpy(dtype=bool, na_value=False)
            if not rows.any():
                continue
            here = value[rows]
            if rule == "in":
                good = np.isin(here, bounds)  # type: ignore[arg-type]
            else:
                low, high = bounds  # type: ignore[misc]
                with np.errstate(invalid="ignore"):
                    good = (here >= low) & (here <= high)
                if rule == "range_or_missing":
                    good |= np.isnan(here)
            ok[rows] = good
        return pd.Series(ok, index=df.index)


def _not_after(bound: pd.Timestamp) -> pa.Check:
    return pa.Check.le(bound, name="not_in_the_future", error="not_in_the_future")


def inference_schema(settings: Settings, day_end: dt.datetime) -> pa.DataFrameSchema:
    """The inference contract for one deployment and day: model columns plus configured ones."""
    cols = settings.inference_columns
    bound = pd.Timestamp(day_end) + settings.max_clock_skew
    # Segments and categorical features alike: strings, limited to the allowed values if listed.
    allowed = settings.segment_values | settings.categorical_values
    extra = {
        name: pa.Column(
            TEXT,
            pa.Check.isin(allowed[name]) if name in allowed else None,
            nullable=True,
            coerce=True,
        )
        for name in cols.segments + cols.categorical_features
    }
    extra |= {name: pa.Column(float, nullable=True, coerce=True) for name in cols.features}
    schema = InferenceLog.to_schema().add_columns(extra)
    return schema.update_column("timestamp", checks=[_not_after(bound)])


def feedback_schema(settings: Settings, day_end: dt.datetime) -> pa.DataFrameSchema:
    """The feedback contract for one day: only the configured kinds, nothing from the future."""
    bound = pd.Timestamp(day_end) + settings.max_clock_skew
    schema = FeedbackEvent.to_schema()
    kinds = [k.value for k in settings.feedback_kinds]
    schema = schema.update_column("kind", checks=[pa.Check.isin(kinds)])
    return schema.update_column("timestamp", checks=[_not_after(bound)])
