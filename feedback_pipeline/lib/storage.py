"""Where the pipeline keeps its files, and how it writes them without ever leaving half a file.

Every dataset is laid out by day: ``<root>/<name>/date=YYYY-MM-DD/part-0.parquet``. Roots are local
paths or fsspec URLs.
"""

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedback_pipeline.lib.ids import arrow_text
from feedback_pipeline.lib.memory import release_arrow


def days_before(day: dt.date, count: int) -> list[str]:
    """The ``count`` days before ``day``, oldest first, as partition keys."""
    return [(day - dt.timedelta(days=i)).isoformat() for i in range(count, 0, -1)]


def day_end(day: dt.date | str) -> pd.Timestamp:
    """The first instant after a day, in UTC."""
    return pd.Timestamp(str(day), tz="UTC") + pd.Timedelta(days=1)


def partition_path(root: str, name: str, day: dt.date | str) -> str:
    """The Parquet file of one day of one dataset."""
    day = day if isinstance(day, str) else day.isoformat()
    return f"{root}/{name}/date={day}/part-0.parquet"


def materialized_days(root: str, name: str) -> list[str]:
    """The days of a dataset whose file is in place, in order.

    A killed first write of a day leaves only a temporary file: that day is not listed.
    """
    fs, path = fsspec.core.url_to_fs(f"{root}/{name}")
    files = fs.glob(f"{path}/date=*/part-0.parquet")
    return sorted(p.rsplit("date=", 1)[-1].split("/", 1)[0] for p in files)


# Rows looked at to judge whether a column repeats its values.
_DICTIONARY_PROBE = 10_000
# The share of distinct values in those rows above which numbers and times are not worth a
# dictionary: measured values (scores, amounts, times of day) are nearly all distinct, counts
# and rates of a few thousand values well under it.
_DISTINCT_NUMBERS = 0.9


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column.dtype) and not isinstance(
        column.dtype, pd.CategoricalDtype
    )


def dictionary_columns(frame: pd.DataFrame) -> list[str]:
    """The columns worth dictionary-encoding: all but those whose values are mostly distinct.

    Ids and free text do not repeat: encoding them as a dictionary costs time on the way out and
    several times more on the way in, for nothing (Arrow gives up on the dictionary part-way).
    Measured numbers and times are the same: Arrow hashes every value into the dictionary until
    it outgrows its page, then writes them plain anyway. A 3M-row slice of a 10M inference day
    was written in 3.0 s instead of 3.9 s once its six such columns (score, amounts, times) were
    left plain, and the file was no bigger (219 MiB against 221); the attributed events in 1.8 s
    instead of 2.1 s, 4% smaller. Numbers of a few thousand values (counts, rates, ratings) keep
    their dictionary, which makes them several times smaller.
    """
    out = []
    for name in frame.columns:
        column = frame[name]
        # The share of distinct values above which the column is written plain.
        if _is_text(column):
            most = 0.5
        elif column.dtype.kind in "fiuMm":  # numbers and times (a category's kind is "O")
            most = _DISTINCT_NUMBERS
        else:  # categories and flags
            most = 1.0
        head = column.iloc[:_DICTIONARY_PROBE]
        if len(head) and head.nunique() > most * len(head):
            continue
        out.append(str(name))
    return out


def statistics_columns(frame: pd.DataFrame) -> list[str]:
    """The columns whose least and greatest values are worth writing: all but text.

    A reader skips row groups by them, which pays for times and numbers: a day's rows come
    roughly in time order. Text (ids, countries) is in no order, so its bounds skip nothing, and
    comparing strings for them took a fifth of the time of writing a day.
    """
    return [str(name) for name in frame.columns if not _is_text(frame[name])]


# The codec of the columns that are compressed (``compression_of``): LZ4 decodes at several
# times the speed of Snappy, Parquet's usual default, for files a few percent larger (a 1M-row
# inference day read back into pandas in 0.9 s instead of 1.5 s, for 72 MiB instead of 71).
COMPRESSION = "lz4"


def compression_of(frame: pd.DataFrame) -> dict[str, str]:
    """Each column's codec: LZ4, but none for floating-point numbers and times.

    Ids and other text shrink to a quarter, and positions and counts to a half; but the bytes of
    measured numbers and of times hardly shrink (0.7-1.0 of their size in a simulated day), and
    LZ4 still reads every page of them on the way out. Left uncompressed, the 10M inference
    day was written in 3.69 s instead of 4.51 s and read back in 2.80 s against 2.63 s (medians
    of five, alternating), for 813 MiB instead of 722; 17M feedback events in 2.37 s against
    2.43 s, 508 MiB instead of 495.
    """
    return {
        str(name): "none" if column.dtype.kind in "fMm" else COMPRESSION
        for name, column in frame.items()
    }


# Rows read at a time where only some of them are kept (``read_rows``).
READ_ROWS = 1 << 16

# Rows converted to Arrow and written at a time: one Parquet row group each.
ROW_GROUP_ROWS = 1 << 20

# The fewest rows worth a part file of their own when a day is written side by side: a 1M
# day's 990,000 valid predictions are written by two threads.
PART_ROWS = 1 << 18

# Key of the schema metadata by which a day's first file names the day's other part files.
PARTS_KEY = b"feedback_pipeline.parts"
# Key by which a day's first file holds the fingerprint of its rows' keys (``rows_key``).
ROWS_KEY = b"feedback_pipeline.rows"
# Key by which a day that extends another names it (see ``write_parquet``'s ``extends``).
EXTENDS_KEY = b"feedback_pipeline.extends"


def write_parquet(
    frame: pd.DataFrame,
    path: str,
    *,
    threads: int = 1,
    extends: str | None = None,
    key: str = "prediction_id",
    rows_key: str | None = None,
) -> None:
    """Writes to a temporary name beside the target, then renames it into place.

    With ``extends``, the path of another stored day whose rows ``frame`` has in the same order
    (checked on ``key``), the day stores only its own columns and ``key``: ``read_parquet``,
    ``read_rows`` and ``read_codes`` read the others from that day, as if they were stored here.
    A labeled day stores its labels this way beside the inference day's columns, instead of a
    second copy of them. The day's first file names that day and the fingerprint of its keys,
    in order, which that day's first file holds if it was written with ``rows_key`` (the
    column's name): while the two agree, rows are paired by position; once that day has been
    written with other rows, or never had a fingerprint, by ``key``.

    The frame goes to Arrow one row group at a time: converting a whole wide day at once would
    hold a second copy of it in memory while it is written.

    With ``threads`` above one, a frame of at least twice ``PART_ROWS`` rows is written as up to
    that many part files side by side, one thread each: Arrow encodes Parquet on one core and
    lets go of Python's lock while it does. The rows keep their order. ``path`` holds the first
    rows and names the other files (``<stem>-<token>-<i>.parquet`` beside it); they are in place
    before ``path`` is renamed into place, so a crash at any point leaves the previous day whole
    or the new one whole. The part files of the day's earlier writes are then deleted.
    ``read_parquet`` reads a day's files together; another Parquet reader reads the day's folder.
    """
    metadata = {}
    if rows_key is not None:
        metadata[ROWS_KEY] = fingerprint(frame[rows_key]).encode()
    if extends is not None:
        frame, metadata[EXTENDS_KEY] = _extension(frame, path, extends, key)
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    first = schema.with_metadata({**(schema.metadata or {}), **metadata})
    encoded, bounded = dictionary_columns(frame), statistics_columns(frame)
    codecs = compression_of(frame)
    count = max(1, min(threads, len(frame) // PART_ROWS))
    # Together the threads hold about as many rows in Arrow as one thread would.
    group = max(ROW_GROUP_ROWS // count, 1)

    def writer_of(rows: pd.DataFrame, schema: pa.Schema) -> Callable[[Any], None]:
        def write(handle: Any) -> None:
            with pq.ParquetWriter(
                handle,
                schema,
                use_dictionary=encoded,  # pyright: ignore[reportArgumentType]
                write_statistics=bounded,  # pyright: ignore[reportArgumentType]
                compression=codecs,  # pyright: ignore[reportArgumentType]
            ) as writer:
                for start in range(0, max(len(rows), 1), group):
                    part = rows.iloc[start : start + group]
                    writer.write_table(
                        pa.Table.from_pandas(part, schema=schema, preserve_index=False)
                    )

        return write

    if count == 1:
        _write_atomically(path, writer_of(frame, first))
        _delete_other_parts(path, keep=[])
        return
    directory, name = path.rsplit("/", 1)
    stem = name.removesuffix(".parquet")
    token = uuid.uuid4().hex[:12]
    others = [f"{stem}-{token}-{i}.parquet" for i in range(1, count)]
    listing = json.dumps({"parts": others, "rows": len(frame)}).encode()
    schemas = [first.with_metadata({**(first.metadata or {}), PARTS_KEY: listing})]
    schemas += [schema] * len(others)
    targets = [path, *(f"{directory}/{other}" for other in others)]
    bounds = np.linspace(0, len(frame), count + 1).astype(int)
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(_stage, target, writer_of(frame.iloc[start:stop], part_schema))
            for target, part_schema, start, stop in zip(
                targets, schemas, bounds[:-1], bounds[1:], strict=True
            )
        ]
    staged = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()
        # The first file, renamed last, is what makes the new day.
        for fs, temporary, target in reversed(staged):
            fs.mv(temporary, target)
    finally:
        for fs, temporary, _ in staged:
            if fs.exists(temporary):
                fs.rm(temporary)
    _delete_other_parts(path, keep=others)


def _extension(
    frame: pd.DataFrame, path: str, extends: str, key: str
) -> tuple[pd.DataFrame, bytes]:
    """The columns of ``frame`` that the day at ``extends`` lacks, with ``key``; and the link.

    ValueError if the rows are not that day's, in its order: the link would pair wrong rows.
    """
    base = _footer(extends)
    if key not in frame or key not in base.names:
        raise ValueError(f"{path}: {key} is needed in the rows and in {extends} to extend it")
    stored = _rows_fingerprint(base)
    theirs = stored or fingerprint(read_parquet(extends, columns=[key])[key])
    if fingerprint(frame[key], like=theirs) != theirs:
        raise ValueError(
            f"{path}: its {len(frame)} rows are not those of {extends} in order "
            f"({theirs.split(':')[0]} rows); was that day written again meanwhile? Run the "
            "step again."
        )
    link = {"path": _relative(extends, path.rsplit("/", 1)[0]), "rows": stored, "key": key}
    # The columns themselves, not copies: ``frame[kept]`` copied 17M attributed events' in 0.3 s.
    kept = {c: frame[c] for c in frame.columns if c == key or c not in base.names}
    return pd.DataFrame(kept, copy=False), json.dumps(link).encode()


# Values per block of a fingerprint (``fingerprint``).
FINGERPRINT_BLOCK = 1 << 21


def fingerprint(column: pd.Series, *, like: str | None = None) -> str:
    """A digest of a text column's values in order: equal for equal values in the same order.

    ``<rows>:sha256:<hex>``: SHA-256 over the SHA-256 of each block of ``FINGERPRINT_BLOCK``
    values, each block's the values' lengths and then their bytes as Arrow holds them. No
    value is copied, whatever the column's chunks: 17M ids in 0.39 s here, where one BLAKE2b
    over a combined copy took 1.10 s (medians of five). The digest does not change with the
    library's version or the chunks. A missing value counts as empty text.

    The blocks are hashed one after another. On a thread per core they took 0.29 s, but the
    threads, new at each call, raised the 10M night's peak by 0.5 GiB while the run holds its
    memory (``memory.hold``): glibc gives new threads heaps of their own.

    With ``like``, a fingerprint stored by earlier versions (``<rows>:<hex>``, one BLAKE2b over
    every value), the column's is given in that form, to be compared with it.
    """
    values = arrow_text(column)
    if like is not None and like.count(":") == 1:
        return _blake2b_fingerprint(values)
    starts = range(0, len(values), FINGERPRINT_BLOCK)
    digests = [_sha256(_block_parts(values.slice(start, FINGERPRINT_BLOCK))) for start in starts]
    return f"{len(values)}:sha256:{hashlib.sha256(b''.join(digests)).hexdigest()}"


def _offsets(chunk: pa.Array) -> tuple[np.ndarray, Any]:
    """A large-text chunk's offsets (one more than its values) and its data buffer."""
    _, offsets, data = chunk.buffers()
    assert offsets is not None
    at = np.frombuffer(offsets, dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
    return at, data


def _block_parts(block: pa.ChunkedArray) -> list[Any]:
    """What a block's digest covers, in order: its values' lengths, then their bytes."""
    chunks = [_offsets(chunk) for chunk in block.chunks if len(chunk)]
    lengths = [np.diff(at).data for at, _ in chunks]
    data = [memoryview(data)[int(at[0]) : int(at[-1])] for at, data in chunks if at[-1] > at[0]]
    return lengths + data


def _sha256(parts: list[Any]) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _blake2b_fingerprint(values: pa.ChunkedArray) -> str:
    """The fingerprint as earlier versions stored it: one BLAKE2b over every value."""
    digest = hashlib.blake2b(digest_size=16)
    if len(values):
        combined = values.combine_chunks()
        at, data = _offsets(combined)
        digest.update((at - at[0]).tobytes())
        if at[-1] > at[0]:  # text all empty may have no data buffer
            digest.update(memoryview(data)[int(at[0]) : int(at[-1])])
    return f"{len(values)}:{digest.hexdigest()}"


def _relative(target: str, directory: str) -> str:
    """``target`` as a path from ``directory`` (``..`` for each folder up)."""
    ours, theirs = directory.split("/"), target.split("/")
    common = 0
    while common < min(len(ours), len(theirs)) and ours[common] == theirs[common]:
        common += 1
    return "/".join([".."] * (len(ours) - common) + theirs[common:])


def _resolve(directory: str, relative: str) -> str:
    """The path ``relative`` names from ``directory``; a URL keeps its ``scheme://``."""
    parts = relative.split("/")
    while parts and parts[0] == "..":
        directory = directory.rsplit("/", 1)[0]
        parts.pop(0)
    return "/".join([directory, *parts])


def _footer(path: str) -> pa.Schema:
    """The Arrow schema of a stored day's first file (its metadata included)."""
    fs, target = fsspec.core.url_to_fs(path)
    if not fs.exists(target):
        raise FileNotFoundError(path)
    with fs.open(target, "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow


def holds_keys(path: str, column: pd.Series) -> bool:
    """Whether ``column`` is the stored day's keys in its order, by the fingerprint it stores.

    A day written with ``rows_key`` stores the fingerprint of that column; comparing with it
    takes no read of the day's keys (17M ids: 0.4 s to fingerprint, 1.2 s to read into pandas).
    False if the day stores none, or the keys or their order differ: read them then.
    """
    stored = _rows_fingerprint(_footer(path))
    return stored is not None and fingerprint(column, like=stored) == stored


def _rows_fingerprint(schema: pa.Schema) -> str | None:
    """The fingerprint of its keys that a day's first file holds (``rows_key``), if any."""
    return (schema.metadata or {}).get(ROWS_KEY, b"").decode() or None


def _stage(path: str, write: Callable[[Any], object]) -> tuple[Any, str, str]:
    """Writes a file to a temporary name beside ``path``: the file system, that name and path."""
    fs, target = fsspec.core.url_to_fs(path)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(temporary, "wb") as handle:
            write(handle)
    except BaseException:
        if fs.exists(temporary):
            fs.rm(temporary)
        raise
    return fs, temporary, target


def _delete_other_parts(path: str, keep: Collection[str]) -> None:
    """Deletes the part files beside ``path`` that its day no longer names."""
    fs, target = fsspec.core.url_to_fs(path)
    directory, name = target.rsplit("/", 1)
    stem = name.removesuffix(".parquet")
    for stale in fs.glob(f"{directory}/{stem}-*.parquet"):
        if stale.rsplit("/", 1)[-1] not in keep:
            fs.rm(stale)


def extended_day(path: str) -> str | None:
    """The path of the day that the day at ``path`` extends (``write_parquet``), or None."""
    link = _link(path)
    return None if link is None else link.base


def day_files(path: str) -> list[str]:
    """The files of one stored day, in row order: ``path`` and the part files it names."""
    listing = _listing(_footer(path))
    directory = path.rsplit("/", 1)[0]
    return [path, *(f"{directory}/{part}" for part in listing.get("parts", []))]


def _listing(schema: pa.Schema) -> dict[str, Any]:
    value = (schema.metadata or {}).get(PARTS_KEY)
    return json.loads(value) if value else {}


def write_bytes(data: bytes, path: str) -> None:
    """Writes a whole file atomically: a crash leaves the previous file, never part of a new one."""
    _write_atomically(path, lambda handle: handle.write(data))


def _write_atomically(path: str, write: Callable[[Any], object]) -> None:
    fs, temporary, target = _stage(path, write)
    try:
        fs.mv(temporary, target)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)


def read_parquet(
    path: str,
    columns: list[str] | None = None,
    *,
    only_present: bool = False,
    optional: Collection[str] = (),
) -> pd.DataFrame:
    """Reads one Parquet file and the part files it names, or raises FileNotFoundError.

    Of a day that extends another (see ``write_parquet``), the columns it does not store are
    read from that day: all of them, the other day's first, when ``columns`` is None.
    """
    link = _link(path)
    if link is None:
        return _read_own(path, columns, only_present=only_present, optional=optional)
    own, theirs = link.names, link.base_schema.names
    present = [*theirs, *(c for c in own if c not in theirs)]
    if columns is None:
        wanted = present
    else:
        if not only_present and not set(present).issuperset(columns):
            missing = [c for c in columns if c not in present]
            raise KeyError(f"{path} has no column {', '.join(missing)}")
        wanted = [c for c in dict.fromkeys([*columns, *optional]) if c in present]
    mine, others = [c for c in wanted if c in own], [c for c in wanted if c not in own]
    if not others:
        return _read_own(path, mine)
    found = _at(read_parquet(link.base, others), link.rows())
    if not mine:
        return found
    frame = _read_own(path, mine)
    return pd.DataFrame({c: (frame if c in own else found)[c] for c in wanted}, copy=False)


class _Link:
    """How a day that extends another finds that day's rows (see ``write_parquet``)."""

    def __init__(self, path: str, schema: pa.Schema):
        spec = json.loads((schema.metadata or {})[EXTENDS_KEY])
        self.path, self.key, self.fingerprint = path, spec["key"], spec["rows"]
        self.names = schema.names  # the columns the day stores itself
        self.base = _resolve(path.rsplit("/", 1)[0], spec["path"])

    @cached_property
    def base_schema(self) -> pa.Schema:
        """The schema of the day extended, its metadata included: read once per link."""
        return _footer(self.base)

    def rows(self) -> np.ndarray | None:
        """None if the day extended still has the rows this day was made on, in that order.

        Else, for each of our rows, that day's row with its key, -1 where it has none.
        """
        now = _rows_fingerprint(self.base_schema)
        if self.fingerprint is not None and now == self.fingerprint:
            return None
        ours = _read_own(self.path, [self.key])[self.key]
        theirs = read_parquet(self.base, columns=[self.key])[self.key]
        return pd.Index(theirs).get_indexer(ours)


def _link(path: str) -> _Link | None:
    """How the day at ``path`` finds the rows of the day it extends; None if it extends none."""
    schema = _footer(path)
    return _Link(path, schema) if EXTENDS_KEY in (schema.metadata or {}) else None


def _at(frame: pd.DataFrame, rows: np.ndarray | None) -> pd.DataFrame:
    """The frame's ``rows`` in that order, missing values where a row is -1; None: the frame."""
    if rows is None:
        return frame
    if len(rows) and rows.min() < 0:
        return frame.reindex(rows).reset_index(drop=True)
    return frame.take(rows).reset_index(drop=True)


def _read_own(
    path: str,
    columns: list[str] | None = None,
    *,
    only_present: bool = False,
    optional: Collection[str] = (),
) -> pd.DataFrame:
    """``read_parquet`` of the columns the day's own files store.

    Args:
        path: the file (the first of a day written in parts; see ``write_parquet``).
        columns: the columns to read (default: all).
        only_present: read those of ``columns`` the file has, rather than fail on the others.
        optional: more columns to read with ``columns``, those of them the file has.

    Returns:
        The frame. A numeric column without missing values shares Arrow's memory and is
        read-only: replace a column (``frame[name] = ...``) rather than write into it.
    """
    fs, target = fsspec.core.url_to_fs(path)
    if not fs.exists(target):
        raise FileNotFoundError(path)
    with fs.open(target, "rb") as handle:
        source = pq.ParquetFile(handle)
        if columns is not None:
            present = set(source.schema_arrow.names)
            if not only_present and not present.issuperset(columns):
                missing = [c for c in columns if c not in present]
                raise KeyError(f"{path} has no column {', '.join(missing)}")
            columns = [c for c in [*columns, *optional] if c in present]
        tables = [source.read(columns=columns)]
        parts = _listing(source.schema_arrow).get("parts", [])
    directory = target.rsplit("/", 1)[0]
    for part in parts:
        try:
            with fs.open(f"{directory}/{part}", "rb") as handle:
                tables.append(pq.ParquetFile(handle).read(columns=columns))
        except FileNotFoundError:
            # Not FileNotFoundError, which means a day not written yet.
            raise OSError(f"{path} names the part file {part}, which is missing") from None
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    del tables
    # Text columns (pandas' string type) come back Arrow-backed, as the validated frames have
    # them; by default pandas rebuilds them as Python objects, the slowest part of reading a day.
    # The table is used up as pandas takes it over, column by column, and a column pandas can
    # share is not copied: a day is never held twice, as Arrow and as one block of pandas floats.
    with pd.option_context("mode.string_storage", "pyarrow"):
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    release_arrow()  # the columns pandas copied (see ``memory.release_arrow``)
    return frame


def read_rows(path: str, columns: list[str], positions: np.ndarray) -> pd.DataFrame:
    """The rows at ``positions`` of a stored day, in that order: those of ``columns`` it has.

    Reads a row group at a time and keeps only the rows asked for, so a sample of a big day
    never holds the whole day in memory. IndexError if a position is past the day's end. Of a
    day that extends another, the columns it does not store are read from that day's rows.
    """
    link = _link(path)
    if link is None:
        return _rows_own(path, columns, positions)
    own, theirs = link.names, set(link.base_schema.names)
    mine = [c for c in columns if c in own]
    others = [c for c in columns if c not in own and c in theirs]
    if not others:
        return _rows_own(path, mine, positions)
    rows = link.rows()
    at = np.asarray(positions, dtype=np.int64)
    if rows is None:
        found = read_rows(link.base, others, at)
    else:
        base = rows[at]
        kept = base >= 0
        found = _at(read_rows(link.base, others, base[kept]), np.where(kept, kept.cumsum() - 1, -1))
    if not mine:
        return found
    frame = _rows_own(path, mine, positions)
    named = [c for c in columns if c in frame or c in found]
    return pd.DataFrame({c: (frame if c in frame else found)[c] for c in named}, copy=False)


def _rows_own(path: str, columns: list[str], positions: np.ndarray) -> pd.DataFrame:
    """``read_rows`` of the columns the day's own files store."""
    wanted, order = np.unique(np.asarray(positions, dtype=np.int64), return_inverse=True)
    tables, offset = [], 0
    for file in day_files(path):
        fs, target = fsspec.core.url_to_fs(file)
        with fs.open(target, "rb") as handle:
            source = pq.ParquetFile(handle)
            names = [c for c in columns if c in source.schema_arrow.names]
            if not tables:
                tables.append(source.schema_arrow.empty_table().select(names))
            for group in range(source.num_row_groups):
                count = source.metadata.row_group(group).num_rows
                low, high = np.searchsorted(wanted, [offset, offset + count])
                if high > low:
                    # In slices of the group: a whole group of a wide day is a few hundred MB.
                    batches = source.iter_batches(READ_ROWS, row_groups=[group], columns=names)
                    start = offset
                    for batch in batches:
                        first, last = np.searchsorted(wanted, [start, start + len(batch)])
                        if last > first:
                            kept = batch.take(pa.array(wanted[first:last] - start))
                            tables.append(pa.Table.from_batches([kept]))
                        start += len(batch)
                offset += count
    if len(wanted) and wanted[-1] >= offset:
        raise IndexError(f"{path} has {offset} rows, not row {wanted[-1]}")
    table = pa.concat_tables(tables)
    del tables
    with pd.option_context("mode.string_storage", "pyarrow"):
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
    return frame.iloc[order].reset_index(drop=True)


def read_codes(path: str, column: str) -> tuple[np.ndarray, list[str]]:
    """A text column of a stored day as codes into its sorted values, as ``pd.factorize`` gives.

    For a column of few values (a model version, a segment): it is read as Arrow's dictionary,
    a row group at a time, so the day's strings are never all in memory (10M model versions:
    40 MB of codes rather than 300 MB of text). Missing values are -1. Of a day that extends
    another, a column it does not store is read from that day's rows.
    """
    link = _link(path)
    if link is not None and column not in link.names:
        codes, values = read_codes(link.base, column)
        rows = link.rows()
        if rows is not None:
            picked = codes[rows.clip(0)] if len(codes) else np.zeros(len(rows), codes.dtype)
            codes = np.where(rows >= 0, picked, -1).astype(codes.dtype)
        return codes, values
    found: dict[str, int] = {}
    parts = []
    for file in day_files(path):
        fs, target = fsspec.core.url_to_fs(file)
        with fs.open(target, "rb") as handle:
            source = pq.ParquetFile(handle, read_dictionary=[column])
            for group in range(source.num_row_groups):
                for chunk in source.read_row_group(group, columns=[column]).column(0).chunks:
                    ours = [found.setdefault(str(v), len(found)) for v in chunk.dictionary]
                    mapping = np.array([*ours, -1], dtype=np.int32)
                    indices = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
                    parts.append(mapping[indices])
    values = sorted(found)
    position = {value: i for i, value in enumerate(values)}
    rank = np.array([*(position[v] for v in found), -1], dtype=np.int32)
    codes = rank[np.concatenate(parts)] if parts else np.empty(0, dtype=np.int32)
    return codes, values


def sample_positions(n: int, rows: int, seed: int) -> np.ndarray:
    """The ascending positions of a seeded sample of at most ``rows`` of ``n`` rows."""
    if n <= rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=rows, replace=False))


def sample_of_days(
    root: str, name: str, days: list[str], columns: list[str], rows: int, seed: int = 0
) -> pd.DataFrame:
    """A seeded sample of at most ``rows`` rows of several stored days taken together.

    Only the sampled rows are read (``read_rows``), so the cost follows the sample, not the
    days. Days without a file are skipped; a column a day lacks is left out of its rows.
    """
    counts = row_counts(root, name, days)
    positions = sample_positions(sum(counts.values()), rows, seed)
    frames, offset = [], 0
    for day, count in counts.items():
        low, high = np.searchsorted(positions, [offset, offset + count])
        path = partition_path(root, name, day)
        frames.append(read_rows(path, columns, positions[low:high] - offset))
        offset += count
    if not frames:
        return pd.DataFrame(columns=columns)
    return concat([f for f in frames if len(f)] or frames[:1])


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one after the other, on a fresh index, categories kept as categories.

    pandas joins a column of categories whose frames have different ones (a day without one
    of the versions, a feedback kind) as Python objects, a string per row: at tens of millions
    of rows, gigabytes. Such a column gets the union of the frames' categories first, sorted.
    Where some frames have it as text (days stored before it became categories), their text is
    made categories first.
    """
    frames = [f.copy(deep=False) for f in frames]  # columns replaced below, not the callers'
    for name in frames[0].columns if len(frames) > 1 else []:
        if not all(name in f for f in frames):
            continue
        columns = [f[name] for f in frames]
        given = [c.dtype for c in columns if isinstance(c.dtype, pd.CategoricalDtype)]
        if not given or not all(
            isinstance(c.dtype, pd.CategoricalDtype) or _is_text(c) for c in columns
        ):
            continue
        columns = [
            c if isinstance(c.dtype, pd.CategoricalDtype) else c.astype("category") for c in columns
        ]
        found = set().union(*(c.cat.categories for c in columns))
        union = pd.Index(sorted(found)).astype(given[0].categories.dtype)
        for frame, column in zip(frames, columns, strict=True):
            frame[name] = column.cat.set_categories(union)
    return pd.concat(frames, ignore_index=True)


def columns_of_days(root: str, name: str, days: list[str], columns: list[str]) -> pd.DataFrame:
    """Some columns of several day partitions (days without a file are skipped)."""
    frames = []
    for day in days:
        try:
            frames.append(read_parquet(partition_path(root, name, day), columns=columns))
        except FileNotFoundError:
            continue
    return concat(frames) if frames else pd.DataFrame(columns=columns)


def parquet_rows(path: str) -> int:
    """The rows of one stored day, from its first file's footer; FileNotFoundError if missing."""
    fs, target = fsspec.core.url_to_fs(path)
    if not fs.exists(target):
        raise FileNotFoundError(path)
    with fs.open(target, "rb") as handle:
        source = pq.ParquetFile(handle)
        return int(_listing(source.schema_arrow).get("rows", source.metadata.num_rows))


def row_counts(root: str, name: str, days: list[str]) -> dict[str, int]:
    """Rows per existing day partition, from the Parquet footers alone."""
    counts = {}
    for day in days:
        try:
            counts[day] = parquet_rows(partition_path(root, name, day))
        except FileNotFoundError:
            continue
    return counts
