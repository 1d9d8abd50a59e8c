import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib.ids import all_among, all_unique, among, repeated
from feedback_pipeline.lib.schemas import TEXT

IDS = st.lists(st.sampled_from(["a", "b", "c", "d", "é", "", None]), max_size=25)


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(IDS)
def test_repeats_and_uniqueness_agree_with_pandas(values: list[str | None]) -> None:
    ids = pd.Series(values, dtype=TEXT)

    assert repeated(ids).tolist() == ids.duplicated().tolist()
    assert all_unique(ids) == ids.is_unique


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=10), IDS)
def test_all_among_agrees_with_pandas_isin(values: list[str], allowed: list[str | None]) -> None:
    left, right = pd.Series(values, dtype=TEXT), pd.Series(allowed, dtype=TEXT)

    assert all_among(left, right) == bool(left.isin(right).all())
    assert among(right, left).tolist() == right.isin(left).fillna(False).tolist()


def test_ids_with_one_hash_are_compared_by_their_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id given the same hash: only the exact comparison can tell them apart."""
    import polars as pl

    monkeypatch.setattr(pl.Series, "hash", lambda self: pl.Series([7] * len(self), dtype=pl.UInt64))
    ids = pd.Series(["p1", "p2", "p1", "p3"], dtype=TEXT)

    assert repeated(ids).tolist() == [False, False, True, False]
    assert not all_unique(ids)
    assert all_unique(ids.iloc[[0, 1, 3]].reset_index(drop=True))


def test_a_million_distinct_ids_are_unique() -> None:
    ids = pd.Series([f"p{i}" for i in range(1_000_000)], dtype=TEXT)

    assert all_unique(ids)
    assert not all_unique(pd.concat([ids, ids.iloc[[123_456]]], ignore_index=True))


def test_the_same_ids_in_order_are_among_each_other_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever their chunks and types; other orders, repeats and gaps are looked up."""
    import pyarrow as pa

    from feedback_pipeline.lib import ids as ids_module

    values = [f"p{i}" for i in range(100)]
    chunked = pd.Series(
        pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(values[:30]), pa.array(values[30:])]))
    )
    plain = pd.Series(values, dtype=object)
    looked_up = []
    monkeypatch.setattr(ids_module, "among", lambda v, a: looked_up.append(1) or among(v, a))

    assert all_among(chunked, plain)
    assert all_among(pd.Series(values, dtype=TEXT), chunked)
    assert not looked_up
    assert all_among(plain.iloc[::-1], chunked)  # the same ids in another order
    assert not all_among(plain.replace("p7", "q7"), chunked)
    assert not all_among(pd.Series([None, *values[1:]], dtype=TEXT), chunked)
    assert len(looked_up) == 3
