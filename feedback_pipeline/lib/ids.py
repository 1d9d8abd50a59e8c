"""Set operations on id columns: on 64-bit hashes in polars, confirmed on the strings.

Validated ids are Arrow-backed strings. pandas' hash tables over them (``isin``, ``is_unique``,
``duplicated``) take seconds at a million rows; sorting their hashes takes milliseconds, and only
the rows whose hash another row shares (repeats, and the odd collision) need the strings.
"""

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa


def repeated(ids: pa.ChunkedArray | pd.Series, rows: np.ndarray | None = None) -> np.ndarray:
    """Which of ``rows`` (default: all) repeat the id of an earlier one of ``rows``.

    A row whose hash no other row has repeats nothing, so only the others are compared exactly.
    Missing ids equal each other, as pandas' ``duplicated`` has them.
    """
    values = pl.Series(ids) if isinstance(ids, pa.ChunkedArray) else pl.from_pandas(ids)
    chosen = np.ones(len(values), dtype=bool) if rows is None else rows
    hashes = values.hash()
    ordered = hashes.filter(pl.Series(chosen)).sort().to_numpy()
    shared = pl.Series(ordered[1:][ordered[1:] == ordered[:-1]])
    candidates = np.flatnonzero(chosen & hashes.is_in(shared.implode()).to_numpy())
    out = np.zeros(len(values), dtype=bool)
    out[candidates] = ~values.gather(candidates).is_first_distinct().to_numpy()
    return out


def all_unique(ids: pd.Series) -> bool:
    """Whether no id repeats another: ``Series.is_unique``, without pandas' hash table."""
    return not repeated(ids).any()


def _text(values: pd.Series) -> pl.Series:
    return pl.from_pandas(values.astype("string[pyarrow]")).cast(pl.String)


def among(values: pd.Series, allowed: pd.Series) -> np.ndarray:
    """Which values are one of ``allowed`` (``isin``; a missing value is in nothing)."""
    found = _text(values).is_in(_text(allowed).drop_nulls().implode())
    return found.fill_null(False).to_numpy()


def all_among(values: pd.Series, allowed: pd.Series) -> bool:
    """Whether every value is one of ``allowed``; at once if they are the same ids in order.

    The same ids in order, as a checked day and the day it extends have them, are compared as
    Arrow holds them, chunk by chunk: 17M ids in 0.09 s, where converting both to polars and
    comparing there took 0.61 s (medians of five).
    """
    if len(values) == len(allowed):
        left = arrow_text(values)
        if left.null_count == 0 and left.equals(arrow_text(allowed)):
            return True
    return bool(among(values, allowed).all())


def arrow_text(values: pd.Series) -> pa.ChunkedArray:
    """The values as Arrow's large text, in the chunks they have (not copied if Arrow-backed)."""
    found = pa.array(values.astype("string[pyarrow]"))
    if not isinstance(found, pa.ChunkedArray):
        found = pa.chunked_array([found])
    return found.cast(pa.large_string())
