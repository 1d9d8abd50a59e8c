"""What a retraining learns from: matured labeled predictions of the most recent days."""

import hashlib

import pandas as pd

KNOWN = ("labeled", "imputed_negative")


def training_rows(days: dict[str, pd.DataFrame], features: list[str]) -> pd.DataFrame:
    """The rows whose label is known, with the day they came from, features and label."""
    frames = []
    for day, frame in sorted(days.items()):
        known = frame[frame["label_status"].isin(KNOWN)]
        keep = ["prediction_id", "model_version", "timestamp", *features, "label", "as_of"]
        frames.append(known[[c for c in keep if c in known.columns]].assign(day=day))
    if not frames:
        return pd.DataFrame(columns=["prediction_id", "day", *features, "label"])
    rows = pd.concat(frames, ignore_index=True)
    return rows.astype({"label": "int8"})


def dataset_version(rows: pd.DataFrame) -> str:
    """A content hash: the same rows always give the same version."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:12]
