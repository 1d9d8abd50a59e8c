"""The attribution benchmark's in-process measurement, on a small day: structure and counts."""

from feedback_pipeline.bench.attribution import (
    STAGES,
    format_table,
    linearity,
    measure_size,
    summarize,
)

ROWS = 2000


def test_measure_size_figures_and_conservation() -> None:
    measured = measure_size(ROWS, repeats=1, seed=3)

    assert measured["rows"] == ROWS
    assert set(measured["runs"]) == set(STAGES)
    for stage in STAGES:
        (run,) = measured["runs"][stage]
        assert run["seconds"] >= 0
        assert isinstance(run["peak_increase_bytes"], int)

    counts = measured["conservation"]
    n_feedback = measured["data"]["feedback"]
    assert n_feedback > 0
    assert counts["attributed_rows"] == counts["feedback_rows"] == n_feedback
    assert counts["status_missing"] == 0
    assert sum(counts["status_counts"].values()) == n_feedback
    assert set(counts["status_counts"]) <= {"attributed", "late", "orphaned"}
    assert counts["labeled_rows"] == counts["prediction_rows"] == ROWS
    assert sum(counts["label_status_counts"].values()) == ROWS
    assert counts["baseline_rows"] == n_feedback
    assert counts["conserved"]

    summary = summarize(ROWS, measured)
    assert set(summary["stages"]) == set(STAGES)
    assert summary["stages"]["join"]["median_seconds"] == (
        measured["runs"]["attribute"][0]["seconds"] + measured["runs"]["label"][0]["seconds"]
    )
    assert summary["targets"]["join_seconds"]["target"] is None  # no time target at 2000 rows
    assert summary["targets"]["join_to_baseline"]["verdict"] in {"PASS", "MISS"}
    assert summary["memory_source"] == "timed runs"
    assert summarize(ROWS, measured, measured)["memory_source"] == "memory run"

    linear = linearity([summary])
    assert linear["ratio"] is None  # needs both 1M and 10M
    table = format_table([summary], linear)
    assert "conserved" in table
    assert "NOT CONSERVED" not in table
