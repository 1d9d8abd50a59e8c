"""Evidently reports and the workspace, with the real library on small frames."""

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.lib import parallel, reports, storage, workspace
from feedback_pipeline.lib.settings import Settings

DAY = "2026-10-05"
NUMERIC, CATEGORICAL = ["a", "b", "score"], ["c", "d"]


def _frame(n: int, seed: int, shift: float = 0.0, tilt: float = 0.0) -> pd.DataFrame:
    """Columns ``a`` and ``c`` move with ``shift`` and ``tilt``; ``b``, ``d`` and the score stay."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 3, n)
    return pd.DataFrame(
        {
            "a": rng.normal(shift, 1, n),
            "b": rng.normal(0, 1, n),
            "score": score,
            "c": np.where(rng.random(n) < 0.3 + tilt, "x", "y"),
            "d": rng.choice(["p", "q", "r"], n),
            "label": (rng.random(n) < score).astype(float),
            "model_version": "v1",
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _frame(40_000, seed=1)


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    return _frame(60_000, seed=2, shift=0.3, tilt=0.2)


def _drift(current: pd.DataFrame, reference: pd.DataFrame, rows: int) -> reports.DayReport:
    return reports.drift_report(
        current,
        reference,
        NUMERIC,
        CATEGORICAL,
        day=DAY,
        model_version="v1",
        sample_rows=rows,
        seed=0,
    )


def test_drift_numbers_equal_evidentlys_data_drift_preset(reference, drifted) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    report = _drift(drifted, reference, rows=100_000)  # no sampling at this size
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    columns = NUMERIC + CATEGORICAL
    direct = Report([DataDriftPreset(columns=columns)]).run(
        Dataset.from_pandas(drifted[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    values = {m["metric_name"]: m["value"] for m in direct.dict()["metrics"]}
    count = next(v for k, v in values.items() if k.startswith("DriftedColumnsCount"))

    assert report.numbers["drift_share"] == pytest.approx(count["share"])
    assert report.numbers["drifted_columns"] == count["count"]
    for column in columns:
        score = next(v for k, v in values.items() if k.startswith(f"ValueDrift(column={column},"))
        assert report.numbers["column_drift_scores"][column] == pytest.approx(float(score))
    assert report.numbers["drifted_column_names"] == ["a", "c"]
    assert report.numbers["sample_rows"] == str(len(drifted))


def test_the_pipeline_numbers_are_a_summary_report_of_mean_values() -> None:
    numbers = {"accuracy": 0.7, "estimated_accuracy": 0.68, "roc_auc": None, "n_labeled": 9}
    job = reports.summary_input(numbers, day=DAY, model_version="v1")
    assert job is not None

    report = reports.draw_summary(job)

    assert report.kind == reports.SUMMARY and report.model_version == "v1"
    assert report.numbers["shown_accuracy"] == pytest.approx(0.7)
    assert report.numbers["shown_estimated_accuracy"] == pytest.approx(0.68)
    assert "shown_roc_auc" not in report.numbers  # missing numbers are left out, not zero
    assert "shown_n_labeled" not in report.numbers  # only the numbers the dashboards plot
    assert reports.summary_input({"roc_auc": float("nan")}, day=DAY, model_version="v1") is None


def test_the_drift_report_of_a_sample_read_from_the_stored_day_is_the_report_of_the_day(
    tmp_path, reference, drifted
) -> None:
    """Drift drawn early reads the sampled rows of the stored day, not the day in memory."""
    day = pd.concat([reference.assign(model_version="v2"), drifted], ignore_index=True)
    path = str(tmp_path / "date=2026-10-05" / "part-0.parquet")
    storage.write_parquet(day, path, threads=2)
    at = np.flatnonzero((day["model_version"] == "v1").to_numpy())
    common = {"day": DAY, "model_version": "v1", "sample_rows": 5000, "seed": 0}
    seed = reports.day_seed(0, DAY, "v1")
    own = at[reports.sample_positions(len(at), 5000, seed)]

    read = storage.read_rows(path, [*NUMERIC, *CATEGORICAL], own)
    early = reports.drift_input(read, reference, NUMERIC, CATEGORICAL, rows=len(at), **common)
    late = reports.drift_input(day, reference, NUMERIC, CATEGORICAL, at=at, **common)

    pd.testing.assert_frame_equal(early.current, late.current, check_dtype=False)
    pd.testing.assert_frame_equal(early.reference, late.reference)
    assert early.metadata == late.metadata
    drawn = [reports.draw_drift(job).numbers for job in (early, late)]
    assert drawn[0]["column_drift_scores"] == drawn[1]["column_drift_scores"]


def test_a_sampled_report_reaches_the_verdict_of_the_full_one(reference, drifted) -> None:
    full = _drift(drifted, reference, rows=100_000)
    sampled = _drift(drifted, reference, rows=10_000)
    calm = _drift(_frame(60_000, seed=3), reference, rows=10_000)

    assert sampled.numbers["sample_rows"] == "10000"
    assert sampled.numbers["reference_sample_rows"] == "10000"
    assert sampled.numbers["drifted_column_names"] == full.numbers["drifted_column_names"]
    assert sampled.numbers["drift_share"] == full.numbers["drift_share"] == 0.4
    for column, score in full.numbers["column_drift_scores"].items():
        assert sampled.numbers["column_drift_scores"][column] == pytest.approx(score, abs=0.03)
    assert calm.numbers["drifted_column_names"] == []


def test_sampling_is_the_same_on_every_run(reference, drifted) -> None:
    first = _drift(drifted, reference, rows=5000)
    second = _drift(drifted, reference, rows=5000)

    assert first.numbers["column_drift_scores"] == second.numbers["column_drift_scores"]
    picked = reports.sample(drifted, 5000, seed=9)
    assert picked.index.equals(reports.sample(drifted, 5000, seed=9).index)
    assert len(picked) == 5000 and picked.index.is_unique


def test_quality_numbers_equal_a_direct_evidently_call(drifted) -> None:
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset
    from sklearn.metrics import accuracy_score, roc_auc_score

    labeled = drifted.iloc[:8000]
    report = reports.quality_report(
        labeled, 0.5, day=DAY, model_version="v1", sample_rows=100_000, seed=0
    )
    assert report is not None
    y, score = labeled["label"].astype(int), labeled["score"]
    frame = pd.DataFrame({"target": y, "prediction": (score >= 0.5).astype(int), "score": score})
    task = BinaryClassification(
        target="target", prediction_labels="prediction", prediction_probas="score"
    )
    direct = Report([ClassificationPreset()]).run(
        Dataset.from_pandas(
            frame,
            data_definition=DataDefinition(numerical_columns=["score"], classification=[task]),
        ),
        None,
    )
    values = {m["config"]["type"].split(":")[-1]: m["value"] for m in direct.dict()["metrics"]}

    assert report.numbers["accuracy"] == pytest.approx(values["Accuracy"])
    assert report.numbers["roc_auc"] == pytest.approx(values["RocAuc"])
    assert report.numbers["accuracy"] == pytest.approx(accuracy_score(y, score >= 0.5))
    assert report.numbers["roc_auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-6)
    assert (
        reports.quality_report(
            labeled.iloc[:0], 0.5, day=DAY, model_version="v1", sample_rows=10, seed=0
        )
        is None
    )


def test_reports_are_saved_whole_as_html_and_json(tmp_path: Path, reference, drifted) -> None:
    report = _drift(drifted.iloc[:3000], reference, rows=100_000)

    html, data = reports.save(report, str(tmp_path))

    assert Path(html).name == "drift.html" and Path(data).name == "drift.json"
    assert Path(html).parent == tmp_path / "version=v1" / f"date={DAY}"
    assert "<html" in Path(html).read_text()[:2000].lower()
    assert '"metrics"' in Path(data).read_text()
    assert not list(tmp_path.rglob("*.partial"))


def test_the_workspace_holds_one_snapshot_per_day_version_and_report(
    settings: Settings, reference, drifted
) -> None:
    drift = _drift(drifted.iloc[:3000], reference, rows=100_000)
    other_day = reports.drift_report(
        drifted.iloc[:3000],
        reference,
        NUMERIC,
        CATEGORICAL,
        day="2026-10-06",
        model_version="v1",
        sample_rows=100_000,
        seed=0,
    )

    first = workspace.add_snapshot(settings, drift)
    again = workspace.add_snapshot(settings, drift)  # the day re-run
    workspace.add_snapshot(settings, other_day)

    ws, project = workspace.open_project(settings)
    runs = [str(r) for r in ws.list_runs(project.id)]
    assert len(runs) == 2
    assert again in runs and first not in runs
    assert workspace.snapshots(settings) == {
        f"{DAY}|v1|drift": again,
        "2026-10-06|v1|drift": runs[0] if runs[0] != again else runs[1],
    }
    # Reopening finds the same project with its dashboard, rather than making another.
    ws2, project2 = workspace.open_project(settings)
    assert project2.id == project.id
    assert len(ws2.search_project(settings.model_name)) == 1
    titles = [panel.title for panel in project2.dashboard.model().panels]
    assert "Accuracy: realized and estimated (CBPE)" in titles
    assert "Data drift: share of drifted columns" in titles


def test_snapshots_stored_by_two_processes_at_once_are_indexed_once(
    settings: Settings, reference, drifted
) -> None:
    """The report workers store their snapshots side by side; the index is written after."""
    before = _drift(drifted.iloc[:3000], reference, rows=100_000)
    replaced = workspace.add_snapshot(settings, before)
    day_reports = [
        _drift(drifted.iloc[:3000], reference, rows=100_000),
        reports.drift_report(
            drifted.iloc[:3000],
            reference,
            NUMERIC,
            CATEGORICAL,
            day=DAY,
            model_version="v2",
            sample_rows=100_000,
            seed=0,
        ),
    ]
    workspace.open_project(settings)  # opened before the fork, as the reports step does

    ids = parallel.forked_map(
        lambda report: (os.getpid(), workspace.store_snapshot(settings, report)), day_reports, 2
    )
    workspace.index_snapshots(
        settings,
        [(r.day, r.model_version, r.kind, i) for r, (_, i) in zip(day_reports, ids, strict=True)],
    )

    assert len({pid for pid, _ in ids}) == 2 and os.getpid() not in {pid for pid, _ in ids}
    ws, project = workspace.open_project(settings)
    runs = sorted(str(r) for r in ws.list_runs(project.id))
    assert runs == sorted(i for _, i in ids)  # the day's earlier drift report is gone
    assert replaced not in runs
    assert workspace.snapshots(settings) == {
        f"{DAY}|v1|drift": ids[0][1],
        f"{DAY}|v2|drift": ids[1][1],
    }
    stored = ws.get_run(project.id, ids[1][1])
    assert stored is not None and "v2" in stored.name


def test_reports_of_rows_at_positions_equal_reports_of_those_rows(reference, drifted) -> None:
    """The nightly step hands each version's positions in the whole day instead of a copy."""
    day = pd.concat([drifted, reference.assign(model_version="v2")], ignore_index=True)
    at = np.flatnonzero((day["model_version"] == "v1").to_numpy())
    own = day.iloc[at].reset_index(drop=True)
    common = {
        "day": DAY,
        "model_version": "v1",
        "sample_rows": 5000,
        "seed": 0,
    }
    drift = [
        reports.drift_report(frame, reference, NUMERIC, CATEGORICAL, **common, **extra)
        for frame, extra in ((own, {}), (day, {"at": at}))
    ]
    labeled = at[day["label"].iloc[at].notna().to_numpy()]
    quality = [
        reports.quality_report(own, 0.5, **common),
        reports.quality_report(day, 0.5, **common, at=labeled),
    ]

    assert drift[0].numbers == drift[1].numbers
    assert drift[1].numbers["rows"] == str(len(at))
    assert quality[0] is not None and quality[1] is not None
    assert quality[0].numbers == quality[1].numbers


def _snapshot_files(settings: Settings) -> list[Path]:
    root = Path(settings.resolve(settings.reports.workspace))
    return sorted(root.glob("*/snapshots/*.json"))


def test_a_workspace_opened_while_a_snapshot_is_written_waits_for_it(
    settings: Settings, reference, drifted
) -> None:
    """Evidently reads every snapshot when it opens a workspace; one half-written is waited for."""
    stored = workspace.add_snapshot(settings, _drift(drifted.iloc[:3000], reference, 100_000))
    (source,) = _snapshot_files(settings)
    whole = source.read_text()
    writing = source.with_name("0192f1d6-5c4e-7b1a-8f3e-2a4b6c8d0e1f.json")  # another run's
    writing.write_text(whole[: len(whole) // 2])
    finish = threading.Timer(0.15, writing.write_text, args=(whole,))
    finish.start()
    try:
        opened = workspace._workspace.__wrapped__(settings.resolve(settings.reports.workspace))
    finally:
        finish.join()

    _, project = workspace.open_project(settings)
    runs = {str(r) for r in opened.list_runs(project.id)}
    assert runs == {stored, writing.stem}


def test_a_snapshot_that_stays_broken_is_named_with_the_workspace(
    settings: Settings, reference, drifted, monkeypatch
) -> None:
    workspace.add_snapshot(settings, _drift(drifted.iloc[:3000], reference, 100_000))
    (source,) = _snapshot_files(settings)
    source.with_name("0192f1d6-5c4e-7b1a-8f3e-2a4b6c8d0e1f.json").write_text('{"metrics": [')
    monkeypatch.setattr(workspace, "OPEN_RETRY_SECONDS", 0.0)
    path = settings.resolve(settings.reports.workspace)

    with pytest.raises(ValueError, match="holds a snapshot that cannot be read"):
        workspace._workspace.__wrapped__(path)


def _stored_day(settings: Settings, warehouse: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stored inference day of 5,000 rows of two versions, and a stored reference of 3,000."""
    from feedback_pipeline.defs.monitoring.reports import REFERENCE_FILE, drift_columns

    numeric, categorical = drift_columns(settings)
    rng = np.random.default_rng(5)

    def rows(n: int) -> pd.DataFrame:
        values = {c: rng.normal(size=n) for c in numeric}
        for c in categorical:
            values[c] = pd.Categorical(rng.choice(["x", "y", "z"], n))
        return pd.DataFrame(values | {"model_version": pd.Categorical(rng.choice(["1", "2"], n))})

    day = rows(5000)
    storage.write_parquet(day, storage.partition_path(warehouse, "inference_log", DAY), threads=2)
    reference = rows(3000)
    reference.to_parquet(f"{warehouse}/{REFERENCE_FILE}")
    return day, reference


def _sampled(settings: Settings, workers: int | None = None) -> Settings:
    changes: dict = {"sample_rows": 1000} | ({"workers": workers} if workers else {})
    return settings.model_copy(update={"reports": settings.reports.model_copy(update=changes)})


def test_the_drift_inputs_of_a_stored_day_are_the_samples_the_reports_step_draws(
    settings: Settings, tmp_path: Path
) -> None:
    """``drift_inputs`` (the drift drawn early, and the benchmark's run alone) reads the rows the
    reports step samples."""
    from feedback_pipeline.defs.monitoring.reports import (
        _reference_for,
        drift_columns,
        drift_inputs,
    )

    settings = _sampled(settings)
    numeric, categorical = drift_columns(settings)
    warehouse = str(tmp_path / "warehouse")
    day, reference = _stored_day(settings, warehouse)

    inputs = drift_inputs(settings, DAY, warehouse, reference)

    assert sorted(inputs) == ["1", "2"]
    for version, (rows, made) in inputs.items():
        at = np.flatnonzero((day["model_version"] == version).to_numpy())
        assert rows == len(at) > 1000  # so the day is sampled, not taken whole
        expected = reports.drift_input(
            day,
            _reference_for(reference, version),
            numeric,
            categorical,
            day=DAY,
            model_version=version,
            sample_rows=1000,
            seed=settings.reports.seed,
            at=at,
        )
        assert len(made.current) == 1000
        pd.testing.assert_frame_equal(made.current, expected.current, check_dtype=False)
        pd.testing.assert_frame_equal(made.reference, expected.reference, check_dtype=False)
        assert made.metadata == expected.metadata


@pytest.mark.parametrize(("most_rows", "workers"), [(5000, 2), (4999, 1)])
def test_the_drift_drawn_early_draws_the_versions_side_by_side_in_days_up_to_a_size(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most_rows, workers
) -> None:
    """Side by side, one worker per version, up to ``SIDE_BY_SIDE_ROWS`` predictions in the day;
    beyond, one worker draws them in turn (its memory would sit beside attribution's peak)."""
    from feedback_pipeline.defs.monitoring import reports as monitoring

    settings = _sampled(settings, workers=2)
    warehouse = str(tmp_path / "warehouse")
    _stored_day(settings, warehouse)
    asked = []

    def forked_map(function, pieces, workers):  # in this process, noting how many were asked
        asked.append(workers)
        return [function(piece) for piece in pieces]

    monkeypatch.setattr(monitoring.parallel, "forked_map", forked_map)
    monkeypatch.setattr(monitoring.os, "nice", lambda increment: 0)  # not this test's process
    monkeypatch.setattr(monitoring, "SIDE_BY_SIDE_ROWS", most_rows)

    early = monitoring._draw_early(settings, DAY, warehouse)

    assert asked == [workers]
    assert sorted(early.reports) == ["1", "2"] and sum(early.rows.values()) == 5000
    for version, (report, seconds) in early.reports.items():
        assert (report.kind, report.day, report.model_version) == (reports.DRIFT, DAY, version)
        assert seconds > 0 and report.numbers
