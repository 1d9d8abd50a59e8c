"""The labeling queue: the unlabeled predictions whose labels would teach the model most.

Each day the predictions without a label are ranked by how uncertain the model was (the score's
distance to the cutoff, scaled to 0..1: 1 at the cutoff, 0 at a sure 0 or 1). The day's budget is
spread over the strata (by default every combination of the segment columns) in proportion to
their unlabeled predictions, by largest remainder, so that no segment is left unasked; within a
stratum the most uncertain come first. The queue is written as CSV, and as tasks a labeling
tool such as Label Studio imports as they are (with the model's guess as a pre-annotation and
the labeling configuration beside them). A label given in the tool comes back as a feedback event
of kind ``label`` with the task's ``prediction_id``.
"""

import json
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from feedback_pipeline.lib import storage

QUEUE_COLUMNS = ["rank", "stratum", "prediction_id", "entity_id", "timestamp", "model_version"]
CHOICES = ("positive", "negative")
LABEL_CONFIG = """<View>
  <Header value="Would this customer convert? Model score: $score (model $model_version)"/>
  <Text name="prediction" value="$summary"/>
  <Choices name="label" toName="prediction" choice="single" showInline="true">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>
"""


def uncertainty(score: pd.Series, cutoff: float) -> pd.Series:
    """1 at the cutoff, falling linearly to 0 at a certain 0 and at a certain 1."""
    span = np.where(score < cutoff, cutoff, 1.0 - cutoff)
    return 1.0 - (score - cutoff).abs() / span


def _largest_remainder(weights: pd.Series, budget: int) -> pd.Series:
    """Whole shares of a budget in proportion to the weights; ties to the larger, then first."""
    if budget <= 0 or weights.sum() <= 0:
        return pd.Series(0, index=weights.index, dtype=int)
    exact = weights * budget / weights.sum()
    quota = np.floor(exact).astype(int)
    order = pd.DataFrame({"rem": exact - quota, "size": weights}).sort_values(
        ["rem", "size"], ascending=False, kind="stable"
    )
    quota.loc[order.index[: budget - int(quota.sum())]] += 1
    return quota


def allocate(sizes: pd.Series, budget: int) -> pd.Series:
    """Splits a budget over strata: one each when it allows, the rest in proportion to size.

    No stratum gets more than it has; when the budget covers every row, every row is taken.
    """
    sizes = sizes[sizes > 0].astype(int)
    if int(sizes.sum()) <= budget:
        return sizes
    first = pd.Series(1 if budget >= len(sizes) else 0, index=sizes.index, dtype=int)
    return first + _largest_remainder(sizes - first, budget - int(first.sum()))


def select(
    labeled: pd.DataFrame,
    per_day: int,
    strata: list[str],
    cutoff: float,
    extra: list[str],
    fetch: Callable[[np.ndarray, list[str]], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The day's queue: at most ``per_day`` unlabeled predictions, spread over the strata.

    Args:
        labeled: the day's labeled predictions (``label_status``, ``score``, strata columns).
        per_day: how many predictions to ask labels for.
        strata: columns whose combinations the budget is spread over (none: one stratum).
        cutoff: the score cutoff; uncertainty is measured from it.
        extra: further columns to carry (features shown to the labeler).
        fetch: where the ``extra`` columns ``labeled`` lacks come from: given the chosen rows'
            positions in ``labeled`` and the columns, those rows (``storage.read_rows`` of the
            stored day), so a day's features are read for the chosen rows only.
    """
    # Chosen on positions and a few columns; only the rows that can make their stratum's quota
    # are taken, and the features shown join only the chosen rows.
    open_rows = np.flatnonzero((labeled["label_status"] != "labeled").to_numpy())
    closeness = uncertainty(pd.Series(labeled["score"].to_numpy(dtype=float)[open_rows]), cutoff)
    stratum, names = _strata(labeled, strata, open_rows)
    quota = allocate(pd.Series(np.bincount(stratum, minlength=len(names)), index=names), per_day)
    # Only rows that can make their stratum's quota are ranked exactly (ties at the edge kept).
    edge = within_quota(
        closeness.to_numpy(), stratum, quota.reindex(names, fill_value=0).to_numpy()
    )
    choosing = [*QUEUE_COLUMNS[2:], "score", *strata]
    kept = [c for c in dict.fromkeys(choosing) if c in labeled]
    candidates = labeled.iloc[open_rows[edge]][kept]
    candidates["uncertainty"] = closeness.to_numpy()[edge]
    candidates["stratum"] = np.asarray(names, dtype=object)[stratum[edge]]
    ranked = candidates.sort_values(
        ["stratum", "uncertainty", "prediction_id"], ascending=[True, False, True], kind="stable"
    )
    position = ranked.groupby("stratum").cumcount()
    chosen = ranked[position < ranked["stratum"].map(quota).fillna(0).to_numpy()]
    chosen = chosen.sort_values(
        ["uncertainty", "prediction_id"], ascending=[False, True], kind="stable"
    )
    chosen = chosen.assign(rank=np.arange(1, len(chosen) + 1))
    columns = [*QUEUE_COLUMNS, "score", "uncertainty"]
    absent = [c for c in extra if c not in labeled and c not in columns]
    fetched = pd.DataFrame(index=chosen.index)
    if absent and fetch is not None:
        fetched = fetch(chosen.index.to_numpy(), absent).set_axis(chosen.index)
    for column in [*strata, *extra]:
        if column not in columns and (column in labeled or column in fetched):
            if column not in chosen:
                source = labeled if column in labeled else fetched
                chosen[column] = source.loc[chosen.index, column]
            columns.append(column)
    out = chosen[columns].reset_index(drop=True)
    return out.astype({"prediction_id": str, "entity_id": str, "model_version": str})


def _strata(
    labeled: pd.DataFrame, strata: list[str], rows: np.ndarray
) -> tuple[np.ndarray, pd.Index]:
    """The stratum of each of ``rows``, as a code into the strata's names (sorted).

    A stratum is named by its combination of values joined by "/", a missing value as
    "(missing)"; two combinations that join to one name are one stratum. Rows are grouped by
    integer codes, never by their name's text: a day holds millions of candidates.
    """
    if not strata:
        return np.zeros(len(rows), dtype=np.intp), pd.Index(["all"])
    # Column by column: the combinations found so far, crossed with the column's values, are
    # numbered again, so codes stay below the number of rows however many columns there are.
    combined, named = np.zeros(len(rows), dtype=np.int64), [""]
    for position, column in enumerate(strata):
        codes, values = pd.factorize(labeled[column].iloc[rows], use_na_sentinel=False)
        text = ["(missing)" if pd.isna(v) else str(v) for v in np.asarray(values, dtype=object)]
        combined, found = pd.factorize(combined * len(values) + codes)
        before = [named[f // len(values)] + "/" if position else "" for f in found]
        named = [b + text[f % len(values)] for b, f in zip(before, found, strict=True)]
    # Two combinations can join to one name: they are then one stratum, as their name says.
    codes, names = pd.factorize(pd.Index(named, dtype=object), sort=True)
    return codes[combined], names


def within_quota(score: np.ndarray, stratum: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """The rows ranked within their stratum's quota (by falling ``score``, ties at the lowest).

    They are those at least as high as the stratum's ``quota``-th highest score. A row without a
    score has no rank, and is never within.
    """
    within = np.zeros(len(score), dtype=bool)
    order = np.argsort(stratum.astype(np.min_scalar_type(len(quota))), kind="stable")  # radix
    bounds = np.searchsorted(stratum[order], np.arange(len(quota) + 1))
    for code, wanted in enumerate(quota):
        rows = order[bounds[code] : bounds[code + 1]]
        values = score[rows]
        scored = ~np.isnan(values)
        if wanted <= 0 or not scored.any():
            continue
        if wanted >= scored.sum():
            within[rows[scored]] = True
            continue
        present = values[scored]
        edge = np.partition(present, len(present) - wanted)[len(present) - wanted]
        within[rows[scored & (values >= edge)]] = True
    return within


def tasks(queue: pd.DataFrame, cutoff: float, features: list[str]) -> list[dict]:
    """Label Studio tasks: the row as data, the model's guess as a pre-annotation."""
    out = []
    for row in queue.to_dict(orient="records"):
        data = {k: _plain(v) for k, v in row.items()}
        data["summary"] = ", ".join(f"{f}={_plain(row[f])}" for f in features if f in row)
        guess = CHOICES[0] if row["score"] >= cutoff else CHOICES[1]
        out.append(
            {
                "data": data,
                "predictions": [
                    {
                        "model_version": str(row["model_version"]),
                        "score": float(row["score"]),
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "prediction",
                                "type": "choices",
                                "value": {"choices": [guess]},
                            }
                        ],
                    }
                ],
            }
        )
    return out


def _plain(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def write(queue: pd.DataFrame, directory: str, cutoff: float, features: list[str]) -> dict:
    """Writes ``queue.csv``, ``tasks.json`` and ``label_config.xml``; returns their paths."""
    fs, root = fsspec.core.url_to_fs(directory)
    fs.makedirs(root, exist_ok=True)
    paths = {
        "csv": f"{directory}/queue.csv",
        "tasks": f"{directory}/tasks.json",
        "label_config": f"{directory}/label_config.xml",
    }
    storage.write_bytes(queue.to_csv(index=False).encode(), paths["csv"])
    storage.write_bytes(
        json.dumps(tasks(queue, cutoff, features), indent=1).encode(), paths["tasks"]
    )
    storage.write_bytes(LABEL_CONFIG.encode(), paths["label_config"])
    return paths


def day_directory(root: str, day: str) -> str:
    """Where a day's queue goes: ``<root>/date=<day>``."""
    return f"{root}/date={day}" if "://" in root else str(Path(root) / f"date={day}")
