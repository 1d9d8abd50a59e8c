"""Sentiment of free-text feedback: how positive or negative a user's comment reads.

The score is VADER's *compound* score (Hutto & Gilbert, 2014): a lexicon of words rated for
valence, adjusted by rules for negation ("not good"), intensifiers ("very"), capitals,
exclamation marks and "but", summed over the text and squashed into [-1, 1]. -1 is as negative as
a text can read, +1 as positive, and values near 0 neutral or mixed (VADER's authors call a text
positive above 0.05 and negative below -0.05). It reads words, not meaning: sarcasm and domain
words that the lexicon does not know score neutral, so the score is a signal to aggregate over
many comments, not a verdict on one.

Missing, empty and blank texts have no sentiment (NaN), never a neutral 0. The analyzer is built
once per process, on first use, and identical texts are scored once.
"""

import numpy as np
import pandas as pd
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

_ANALYZER: list[SentimentIntensityAnalyzer] = []


def _analyzer() -> SentimentIntensityAnalyzer:
    """The process's analyzer, built on first use (reading its lexicon takes a moment)."""
    if not _ANALYZER:
        _ANALYZER.append(SentimentIntensityAnalyzer())
    return _ANALYZER[0]


def sentiment(texts: pd.Series) -> pd.Series:
    """The VADER compound score of each text, in [-1, 1].

    Args:
        texts: the comments; None, NaN, empty and whitespace-only values have no score.

    Returns:
        A float series with the same index: the compound score of each text, NaN where there is
        no text. Each distinct text is scored once, however often it occurs.
    """
    present = texts.notna().to_numpy()
    stripped = texts[present].astype(str).str.strip().to_numpy(dtype=object)
    nonempty = stripped != ""
    at, kept = np.flatnonzero(present)[nonempty], stripped[nonempty]
    out = np.full(len(texts), np.nan)
    if len(at):
        analyzer = _analyzer()
        codes, unique = pd.factorize(kept)
        scores = np.array([analyzer.polarity_scores(t)["compound"] for t in unique], dtype=float)
        out[at] = scores[codes]
    return pd.Series(out, index=texts.index, name=texts.name, dtype=float)
