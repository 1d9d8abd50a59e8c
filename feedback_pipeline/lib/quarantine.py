"""Where rejected rows wait, how they are listed, and how fixed rows come back.

Quarantine is Parquet in the same day layout as the warehouse
(``quarantine/<asset>/date=YYYY-MM-DD/part-0.parquet``), one row per rejected row (or unreadable
file) with its reason and original record. Fixes are not written back into the landing files:
they are kept beside them as corrections (``corrections/<asset>/date=.../part-0.parquet``, keyed
by file and row) which ingestion applies before validation. A replayed row therefore replaces its
original — it is counted once, and never duplicated however often it is replayed.
"""

import json

import fsspec
import pandas as pd

from feedback_pipeline.lib import storage

CORRECTION_COLUMNS = ["source_file", "source_row", "record"]
ASSETS = ("inference_log", "feedback_events")


def days_with_data(root: str, asset: str) -> list[str]:
    """The days for which a dataset has a partition file, oldest first."""
    fs, path = fsspec.core.url_to_fs(f"{root}/{asset}")
    found = fs.glob(f"{path}/date=*/part-0.parquet") if fs.exists(path) else []
    return sorted(p.split("date=", 1)[1].split("/", 1)[0] for p in found)


def load(root: str, asset: str, day: str) -> pd.DataFrame:
    """One day's quarantine of one asset (empty if there is none)."""
    try:
        return storage.read_parquet(storage.partition_path(root, asset, day))
    except FileNotFoundError:
        return pd.DataFrame()


def summary(root: str) -> pd.DataFrame:
    """Quarantined rows per asset and day, with the most frequent check."""
    rows = []
    for asset in ASSETS:
        for day in days_with_data(root, asset):
            frame = load(root, asset, day)
            if frame.empty:
                continue
            top = frame["check"].value_counts()
            rows.append(
                {
                    "asset": asset,
                    "day": day,
                    "rows": len(frame),
                    "files": frame["source_file"].nunique(),
                    "top_check": f"{top.index[0]} ({top.iloc[0]})",
                }
            )
    return pd.DataFrame(rows, columns=["asset", "day", "rows", "files", "top_check"])


def export_fixes(quarantine: pd.DataFrame, path: str) -> int:
    """Writes the quarantined records as JSON Lines, each with its file and row, for editing."""
    rows = quarantine[quarantine["record"].notna()]
    lines = [
        json.dumps(
            {"source_file": file, "source_row": int(row), **json.loads(record)},
            ensure_ascii=False,
        )
        + "\n"
        for file, row, record in zip(
            rows["source_file"], rows["source_row"], rows["record"], strict=True
        )
    ]
    storage.write_bytes("".join(lines).encode("utf-8"), path)
    return len(rows)


def read_fixes(path: str) -> pd.DataFrame:
    """Reads edited records back: every line needs ``source_file`` and ``source_row``."""
    rows = []
    fs, location = fsspec.core.url_to_fs(path)
    with fs.open(location, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fix = json.loads(line)
            if "source_file" not in fix or "source_row" not in fix:
                raise ValueError(f"{path}: line {number}: needs source_file and source_row")
            file, row = fix.pop("source_file"), int(fix.pop("source_row"))
            rows.append(
                {
                    "source_file": file,
                    "source_row": row,
                    "record": json.dumps(fix, ensure_ascii=False),
                }
            )
    return pd.DataFrame(rows, columns=CORRECTION_COLUMNS)


def load_corrections(root: str, asset: str, day: str) -> pd.DataFrame:
    """The corrections of one asset and day (empty if none)."""
    try:
        return storage.read_parquet(storage.partition_path(root, asset, day))
    except FileNotFoundError:
        return pd.DataFrame(columns=CORRECTION_COLUMNS)


def add_corrections(root: str, asset: str, day: str, fixes: pd.DataFrame) -> pd.DataFrame:
    """Merges new fixes into the stored corrections; a later fix of a row replaces an earlier."""
    merged = pd.concat([load_corrections(root, asset, day), fixes], ignore_index=True)
    merged = merged.drop_duplicates(["source_file", "source_row"], keep="last")
    merged = merged.sort_values(["source_file", "source_row"]).reset_index(drop=True)
    storage.write_parquet(merged, storage.partition_path(root, asset, day))
    return merged
