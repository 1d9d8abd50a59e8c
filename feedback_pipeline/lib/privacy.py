"""Pseudonyms for personal columns: what leaves the pipeline never carries a raw id.

Columns named in ``privacy.personal_columns`` (canonical names such as ``entity_id`` and
``user_id``) are replaced by a keyed hash (HMAC-SHA256, the first 16 hex digits, prefixed ``p_``)
wherever data leaves the pipeline: the dashboard and its CSVs, the labeling queue, Dagster
metadata and logs, and the demo summary. The warehouse and the quarantine, inside the data
directory, keep the raw values, so joins and replays still work.

The key comes from the environment variable named by ``privacy.key_env``
(``FEEDBACK_PIPELINE_HASH_KEY`` by default), never from a file. The same key gives the same
pseudonym on every night, so a pseudonym can be followed over time; without the key it cannot be
turned back into the id. When the variable is unset, a random key is drawn once per process and a
warning says so: nothing leaks, but pseudonyms then differ between processes.
"""

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from functools import cache

import pandas as pd

from feedback_pipeline.lib.settings import Settings

log = logging.getLogger(__name__)
PREFIX = "p_"


@cache
def _ephemeral_key(name: str) -> bytes:
    log.warning(
        "%s is not set: personal columns are hashed with a random key of this process only; "
        "set it to keep pseudonyms stable between runs",
        name,
    )
    return secrets.token_bytes(32)


def key(settings: Settings) -> bytes:
    """The hashing key, from the environment (or this process's random one)."""
    name = settings.privacy.key_env
    value = os.environ.get(name)
    return value.encode() if value else _ephemeral_key(name)


def personal(settings: Settings) -> set[str]:
    """The canonical names of the columns that are personal."""
    return set(settings.privacy.personal_columns)


def pseudonym(value: object, secret: bytes) -> object:
    """The keyed hash of one value; missing values stay missing."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return value
    digest = hmac.new(secret, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:16]


def values(items: Iterable[object], settings: Settings) -> list[object]:
    """Pseudonyms of the given values (for messages and metadata)."""
    secret = key(settings)
    return [pseudonym(item, secret) for item in items]


def frame(data: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The frame with every personal column replaced by pseudonyms (a copy when any is)."""
    columns = [c for c in data.columns if c in personal(settings)]
    if not columns or not len(data):
        return data
    secret = key(settings)
    out = data.copy()
    for column in columns:
        codes, uniques = pd.factorize(out[column], use_na_sentinel=True)
        hashed = [pseudonym(u, secret) for u in uniques]
        named = [hashed[code] if code >= 0 else None for code in codes]
        out[column] = pd.Series(named, index=out.index, dtype=object)
    return out


def enabled(settings: Settings) -> bool:
    """Whether any column is personal."""
    return bool(settings.privacy.personal_columns)
