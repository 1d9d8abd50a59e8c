"""Sentiment of comments: the sign of the score, missing text, the index, the simulator's lines."""

import math

import numpy as np
import pandas as pd

from feedback_pipeline.lib.sentiment import sentiment
from feedback_pipeline.simulate.traffic import COMMENTS_BAD, COMMENTS_GOOD


def test_positive_text_scores_above_zero_and_negative_text_below() -> None:
    scores = sentiment(pd.Series(["I love it, great help!", "This is terrible and useless."]))

    assert 0 < scores.iloc[0] <= 1
    assert -1 <= scores.iloc[1] < 0


def test_missing_empty_and_blank_texts_have_no_score() -> None:
    scores = sentiment(pd.Series([None, "", "   ", np.nan, pd.NA, "Thanks!"], dtype=object))

    assert scores.iloc[:5].isna().all()
    assert scores.iloc[5] > 0
    assert scores.dtype == float


def test_the_index_and_name_are_kept_even_when_duplicated() -> None:
    texts = pd.Series(
        ["Great!", None, "Awful.", "Great!"], index=[10, 10, 7, 3], name="text", dtype=object
    )

    scores = sentiment(texts)

    assert scores.index.tolist() == [10, 10, 7, 3]
    assert scores.name == "text"
    assert scores.iloc[0] > 0
    assert math.isnan(scores.iloc[1])
    assert scores.iloc[2] < 0
    assert scores.iloc[3] == scores.iloc[0]


def test_identical_texts_get_identical_scores_and_surrounding_blanks_do_not_matter() -> None:
    scores = sentiment(pd.Series(["Wrong again.", "  Wrong again.  ", "Wrong again."]))

    assert scores.nunique() == 1
    assert scores.iloc[0] < 0


def test_no_text_at_all_gives_an_empty_or_all_missing_series() -> None:
    assert sentiment(pd.Series([], dtype=object)).empty
    assert sentiment(pd.Series([None, "  "], index=["a", "b"])).isna().all()


def test_every_bad_simulator_comment_scores_below_every_good_one() -> None:
    bad = sentiment(pd.Series(COMMENTS_BAD))
    good = sentiment(pd.Series(COMMENTS_GOOD))

    assert bad.notna().all()
    assert good.notna().all()
    assert bad.max() < good.min()
    assert (good > 0.05).all()  # VADER's own threshold for a positive text
