"""The comparison benchmark's naive script and bookkeeping, on tiny hand-built data.

NannyML is not installed here (the benchmark makes its own venv), so only what runs without it
is tested, plus a check that its child script stays free of the project's imports.
"""

import ast
import datetime as dt
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from feedback_pipeline.bench import compare
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.estimation import ALL
from feedback_pipeline.lib.metrics import slices
from feedback_pipeline.lib.settings import Settings

DAY = pd.Timestamp("2026-10-04", tz="UTC")
WINDOWS = {
    "label": pd.Timedelta(days=7),
    "correction": pd.Timedelta(days=7),
    "thumb": pd.Timedelta(days=2),
}


def _at(hours: float) -> pd.Timestamp:
    return DAY + pd.Timedelta(hours=hours)


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction_id": ["p1", "p2", "p3", "p4", "p5"],
            "entity_id": ["e1", "e1", "e2", "e3", "e4"],
            "timestamp": [_at(10), _at(12), _at(10), _at(10), _at(10)],
            "model_version": ["v1", "v1", "v2", "v2", "v1"],
            "score": [0.9, 0.2, 0.7, 0.4, 0.6],
        }
    )


def _events(rows: list[tuple]) -> pd.DataFrame:
    columns = ["feedback_id", "prediction_id", "entity_id", "timestamp", "kind", "value"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))


def test_naive_join_labels_by_id_entity_window_and_kind_strength() -> None:
    events = _events(
        [
            ("f1", "p1", "e1", _at(11), "label", 1.0),
            ("f2", "p1", "e1", _at(13), "correction", 0.0),
            ("f3", "p1", "e1", _at(14), "label", 1.0),  # later, but a correction is stronger
            ("f4", None, "e1", _at(12.5), "label", 1.0),  # p1 and p2 precede it: p2, the latest
            ("f5", None, "e2", _at(9), "label", 0.0),  # before p3: no prediction
            ("f6", "p4", "e3", _at(10 + 8 * 24), "label", 1.0),  # outside the 7-day window
            ("f7", "p3", "e2", _at(11), "thumb", 1.0),  # not a label kind
            ("f8", None, "e4", _at(10.5), "label", 0.0),
            ("f9", None, "e4", _at(10.75), "label", 1.0),  # the latest label of p5
            ("f10", "p5", "e4", _at(11), "label", 9.0),  # not a class
            ("f11", "p3", "e2", _at(11), "emoji", 1.0),  # an unknown kind
        ]
    )

    labeled = compare.naive_join(_predictions(), events, WINDOWS, ["correction", "label"])

    assert labeled["prediction_id"].tolist() == ["p1", "p2", "p3", "p4", "p5"]
    assert labeled["model_version"].tolist() == ["v1", "v1", "v2", "v2", "v1"]
    assert labeled["label"].tolist()[:2] == [0.0, 1.0]
    assert labeled["label"].isna().tolist() == [False, False, True, True, False]
    assert labeled["label"].iloc[4] == 1.0


def test_naive_join_without_feedback_labels_nothing() -> None:
    labeled = compare.naive_join(_predictions(), _events([]), WINDOWS, ["correction", "label"])

    assert len(labeled) == 5
    assert labeled["label"].isna().all()


def test_read_landing_files_reads_every_format_under_canonical_names(tmp_path: Path) -> None:
    names = {"request_id": "prediction_id", "customer_id": "entity_id", "served_at": "timestamp"}
    parquet = pd.DataFrame({"request_id": ["a"], "customer_id": ["x"], "served_at": [_at(1)]})
    parquet.to_parquet(tmp_path / "part-0.parquet", index=False)
    (tmp_path / "part-0.csv").write_text(
        "request_id,customer_id,served_at\n"
        "b,y,2026-10-04 02:00:00.000000\n"
        "c,z,yesterday afternoon\n"
    )
    (tmp_path / "part-0.jsonl").write_text(
        json.dumps({"request_id": "d", "customer_id": "w", "served_at": "2026-10-04T03:00:00Z"})
        + "\n"
    )
    paths = [str(tmp_path / f"part-0.{ext}") for ext in ("parquet", "csv", "jsonl")]

    frame = compare.read_landing_files(paths, names)

    assert frame["prediction_id"].tolist() == ["a", "b", "c", "d"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["timestamp"].tolist()[:2] == [_at(1), _at(2)]
    assert pd.isna(frame["timestamp"].iloc[2])
    assert frame["timestamp"].iloc[3] == _at(3)


def test_clean_predictions_drops_unusable_rows_and_repeated_ids() -> None:
    frame = pd.DataFrame(
        {
            "prediction_id": ["a", "b", None, "c", "a", "d"],
            "timestamp": [_at(1)] * 6,
            "score": ["0.5", "1.7", "0.2", "n/a", "0.9", "0.1"],
            "tenure_days": ["3", "n/a", "1", "1", "1", "2"],
        }
    )

    cleaned = compare.clean_predictions(frame, ["score", "tenure_days"])

    assert cleaned["prediction_id"].tolist() == ["a", "d"]
    assert cleaned["score"].tolist() == [0.5, 0.1]
    assert cleaned["tenure_days"].tolist() == [3.0, 2.0]


def test_naive_metrics_match_scikit_learn_on_every_slice() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "model_version": rng.choice(["v1", "v2"], n),
            "country": rng.choice(["US", "DE"], n),
            "score": rng.random(n),
            "label": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 2, n)),
        }
    )

    slices = compare.naive_metrics(frame, ["country"], 0.5)

    assert set(slices) == {
        f"{v}|{s}" for v in ("all", "v1", "v2") for s in ("all", "country=DE", "country=US")
    }
    known = frame[frame["label"].notna() & (frame["model_version"] == "v2")]
    us = known[known["country"] == "US"]
    assert slices["v2|country=US"]["n_labeled"] == len(us)
    assert slices["v2|country=US"]["accuracy"] == accuracy_score(us["label"], us["score"] >= 0.5)
    assert slices["v2|country=US"]["roc_auc"] == roc_auc_score(us["label"], us["score"])
    assert slices["all|all"]["n_labeled"] == frame["label"].notna().sum()


def test_naive_metrics_leave_roc_auc_out_on_one_class() -> None:
    frame = pd.DataFrame(
        {"model_version": ["v1"] * 3, "score": [0.2, 0.7, 0.9], "label": [1.0, 1.0, 1.0]}
    )

    slices = compare.naive_metrics(frame, [], 0.5)

    assert slices["v1|all"]["roc_auc"] is None
    assert slices["v1|all"]["accuracy"] == pytest.approx(2 / 3)


def _pipeline_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("all", "all", 0.80, 0.90, 100),
            ("v1", "all", 0.70, math.nan, 40),
            ("v1", "country=US", 0.10, 0.10, 5),
            ("v2", "all", 0.90, 0.95, 60),
        ],
        columns=["model_version", "segment", "accuracy", "roc_auc", "n_labeled"],
    )


def test_agreement_reports_the_largest_difference_per_metric() -> None:
    tool = {
        "all": {"accuracy": 0.81, "roc_auc": 0.90},
        "v1": {"accuracy": 0.70, "roc_auc": 0.60},  # the pipeline has no ROC AUC here
        "v2": {"accuracy": 0.87, "roc_auc": None},
        "v3": {"accuracy": 0.0},  # unknown to the pipeline
    }

    found = compare.agreement(tool, _pipeline_metrics(), tool_labeled=98)

    assert found["max_abs_difference"]["accuracy"] == pytest.approx(0.03)
    assert found["max_abs_difference"]["roc_auc"] == pytest.approx(0.0)
    assert set(found["by_version"]) == {"all", "v1", "v2"}
    assert "roc_auc" not in found["by_version"]["v1"]
    assert found["by_version"]["all"]["accuracy"]["pipeline"] == 0.80
    assert found["labeled"] == {"tool": 98, "pipeline": 100}


def test_agreement_over_slices_takes_the_largest_difference_of_those_both_measured() -> None:
    slices = {
        "all|all": {"accuracy": 0.81, "roc_auc": 0.90},
        "v1|country=US": {"accuracy": 0.16, "roc_auc": 0.09},
        "v1|all": {"accuracy": 0.70, "roc_auc": 0.5},  # the pipeline has no ROC AUC here
        "v2|country=DE": {"accuracy": 0.0},  # a slice the pipeline did not measure
    }

    found = compare.agreement({}, _pipeline_metrics(), tool_labeled=None, slices=slices)

    assert found["slices_compared"] == 3
    assert found["slices_max_abs_difference"]["accuracy"] == pytest.approx(0.06)
    assert found["slices_max_abs_difference"]["roc_auc"] == pytest.approx(0.01)
    assert "slices_compared" not in compare.agreement({}, _pipeline_metrics(), tool_labeled=None)


def _run(seconds: dict[str, float], peak: int = 2**30) -> dict:
    stages = {
        name: {
            "seconds": s,
            "rss_before_bytes": 0,
            "peak_rss_bytes": peak,
            "peak_increase_bytes": 1,
        }
        for name, s in seconds.items()
    }
    return {
        "stages": stages,
        "import_seconds": 1.0,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak // 2,
        "rows": {"predictions": 10, "labeled": 98},
        "overall": {"all": {"accuracy": 0.80, "roc_auc": 0.91}},
        "slices": {},
        "drift": {},
        "packages": {"pandas": "2.3.3"},
    }


def test_summarize_takes_medians_over_the_runs_that_finished() -> None:
    stopped = {"error": "stopped after 9 s", "completed_stages": {"read": {"seconds": 1.0}}}
    runs = [
        _run({"read": 1.0, "join": 2.0, "metrics": 3.0, "drift": 4.0}),
        _run({"read": 3.0, "join": 2.0, "metrics": 3.0, "drift": 4.0}, peak=3 * 2**30),
        stopped,
    ]

    summary = compare.summarize("naive", runs, _pipeline_metrics())

    assert summary["failed_repeats"] == 1
    assert summary["stages"]["read"]["seconds"] == [1.0, 3.0]
    assert summary["stages"]["read"]["median_seconds"] == 2.0
    assert summary["stages"]["read"]["peak_rss_bytes"] == 2 * 2**30
    assert summary["total"]["seconds"] == [10.0, 12.0]
    assert summary["monitoring_median_seconds"] == 11.0
    assert summary["agreement"]["max_abs_difference"]["roc_auc"] == pytest.approx(0.01)
    assert summary["runs"][-1] == stopped
    assert "overall" not in summary["runs"][0]
    assert "total" in compare.format_table([summary])


def test_summarize_reports_a_stopped_tool_as_failed_not_raised() -> None:
    stopped = {
        "error": "stopped after 60 s at a peak RSS of 13.9 GiB",
        "failed_stage": "join",
        "completed_stages": {
            "read": {"seconds": 20.0, "peak_rss_bytes": 2**32, "peak_increase_bytes": 2**31}
        },
    }

    summary = compare.summarize("naive", [stopped], None)

    assert summary["failed_repeats"] == 1
    assert summary["error"] == stopped["error"]
    assert "stages" not in summary
    table = compare.format_table([summary])
    assert "FAILED in join: stopped after 60 s" in table
    assert "read" in table


def test_stage_clock_times_stages_and_records_progress(tmp_path: Path) -> None:
    progress = tmp_path / "progress.jsonl"
    clock = compare.StageClock(str(progress))

    with clock("read"):
        blob = np.ones(2**20)
    with clock("join"):
        del blob

    assert list(clock.figures) == ["read", "join"]
    assert all(f["seconds"] >= 0 and f["peak_rss_bytes"] > 0 for f in clock.figures.values())
    assert compare._completed_stages(progress) == clock.figures


def test_describe_job_lists_the_days_files_and_the_drift_columns(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = dt.date(2026, 10, 4)
    monkeypatch.setattr(storage, "PART_ROWS", 10)
    labeled = storage.partition_path(settings.resolve("warehouse"), "labeled_predictions", day)
    storage.write_parquet(pd.DataFrame({"score": np.linspace(0, 1, 30)}), labeled, threads=2)
    log = storage.partition_path(settings.resolve("warehouse"), "inference_log", day)
    storage.write_parquet(pd.DataFrame({"score": np.linspace(0, 1, 15)}), log)
    for root, offset in ((settings.landing.inferences, 0), (settings.landing.feedback, 3)):
        folder = Path(settings.resolve(root)) / f"date={day + dt.timedelta(days=offset)}"
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"")
        (folder / "notes.txt").write_text("not a landing file")
    late = Path(settings.resolve(settings.landing.feedback)) / "date=2026-10-30"
    late.mkdir()
    (late / "events.csv").write_text("")

    job = compare.describe_job(settings, "2026-10-04")

    assert [Path(p).parent.name for p in job["inference_files"]] == ["date=2026-10-04"]
    assert [Path(p).parent.name for p in job["feedback_files"]] == ["date=2026-10-07"]
    assert job["inference_names"]["request_id"] == "prediction_id"
    assert job["feedback_names"]["received_at"] == "timestamp"
    assert job["numeric"][-2:] == ["score", "latency_ms"]
    assert len(job["numeric"]) == len(settings.inference_columns.features) + 2
    assert job["categorical"][-2:] == ["country", "platform"]
    assert job["windows_s"]["correction"] == 7 * 86400
    assert job["label_kinds"] == ["correction", "label"]
    assert job["reference"].endswith("warehouse/reference_data.parquet")
    # The day was written in two part files, and the child reads both.
    assert job["labeled_predictions"][0] == labeled
    assert len(job["labeled_predictions"]) == 2
    assert job["inference_log"] == [log]  # where the labeled day's other columns are
    json.dumps(job)  # it crosses to the child process as JSON


def test_nannyml_child_imports_nothing_from_the_project() -> None:
    tree = ast.parse(compare.NANNYML_CHILD.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }

    assert "feedback_pipeline" not in imported
    assert "nannyml" in imported


def _nannyml_child() -> Any:
    spec = importlib.util.spec_from_file_location("nannyml_child", compare.NANNYML_CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_nannyml_child_measures_the_slices_the_pipeline_measures() -> None:
    rng = np.random.default_rng(5)
    n = 400
    day = pd.DataFrame(
        {
            "model_version": pd.Categorical(rng.choice(["v1", "v2"], n)),
            "country": pd.Categorical(rng.choice(["DE", "US"], n), categories=["DE", "FR", "US"]),
            "platform": pd.Categorical(rng.choice(["ios", "web"], n)),
        }
    )
    child = _nannyml_child()
    job = {"segments": ["country", "platform"]}

    theirs = {
        f"{version}|{segment}": len(part)
        for version, rows in child._versions(day, ALL)
        for segment, part in child._segments(rows, job, ALL)
    }

    ours = {f"{v}|{s}": len(at) for v, s, at in slices(day, ["country", "platform"])}
    assert theirs == ours
    assert "all|country=FR" not in theirs  # a category without rows is no slice


@pytest.mark.parametrize("rewritten", [False, True])
def test_the_nannyml_child_reads_a_labeled_day_as_the_pipeline_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rewritten: bool
) -> None:
    monkeypatch.setattr(storage, "PART_ROWS", 100)
    n, root, day = 500, str(tmp_path), "2026-10-02"
    rng = np.random.default_rng(3)
    log = pd.DataFrame(
        {
            "prediction_id": pd.Series([f"p{i}" for i in range(n)], dtype="string[pyarrow]"),
            "timestamp": pd.date_range("2026-10-02", periods=n, freq="min", tz="UTC"),
            "model_version": pd.Categorical(rng.choice(["1", "2"], n)),
            "score": rng.random(n),
            "tenure_days": rng.random(n) * 100,
        }
    )
    labels = log[["prediction_id"]].assign(label=rng.choice([0.0, 1.0, np.nan], n))
    base = storage.partition_path(root, "inference_log", day)
    labeled = storage.partition_path(root, "labeled_predictions", day)
    storage.write_parquet(log, base, threads=2, rows_key="prediction_id")
    storage.write_parquet(labels, labeled, threads=2, extends=base)
    if rewritten:  # the inference day written again in another order: joined on the id
        storage.write_parquet(log.iloc[::-1], base, threads=2, rows_key="prediction_id")
    reference = f"{root}/reference.parquet"
    log.assign(label=1.0).to_parquet(reference)
    job = {
        "labeled_predictions": storage.day_files(labeled),
        "inference_log": storage.day_files(base),
        "reference": reference,
        "numeric": ["tenure_days", "score"],
        "categorical": [],
        "score_cutoff": 0.5,
    }

    read, _ = _nannyml_child().load(job)

    expected = storage.read_parquet(labeled)
    assert len(job["labeled_predictions"]) > 1 and len(job["inference_log"]) > 1
    np.testing.assert_array_equal(read["label"], expected["label"])
    np.testing.assert_array_equal(read["score"], expected["score"])
    np.testing.assert_array_equal(read["timestamp"], expected["timestamp"].dt.tz_convert(None))


def test_a_child_runs_the_tool_its_job_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(compare, "run_pipeline", lambda job: {"ran": "pipeline", "day": job["day"]})
    monkeypatch.setattr(compare, "run_naive", lambda job: {"ran": "naive", "day": job["day"]})
    ran = {}
    for tool in ("pipeline", "naive", None):
        job = {"day": "2026-10-04"} | ({"tool": tool} if tool else {})
        assert compare.main(["--child", json.dumps(job)]) == 0
        printed = capsys.readouterr().out.strip().splitlines()[-1]
        assert printed.startswith(compare.RESULT_PREFIX)
        ran[tool] = json.loads(printed.removeprefix(compare.RESULT_PREFIX))["ran"]
    assert ran == {"pipeline": "pipeline", "naive": "naive", None: "naive"}


def test_the_workdirs_own_settings_file_is_named_to_the_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compare.SETTINGS_ENV, "/elsewhere/settings.yaml")
    assert compare.workdir_environment(tmp_path) == {compare.DATA_DIR_ENV: str(tmp_path)}
    (tmp_path / "settings.yaml").write_text("model_name: m\n")
    with compare.data_dir(tmp_path):
        assert compare.os.environ[compare.SETTINGS_ENV] == str(tmp_path / "settings.yaml")
        assert compare.os.environ[compare.DATA_DIR_ENV] == str(tmp_path)
    assert compare.os.environ[compare.SETTINGS_ENV] == "/elsewhere/settings.yaml"
