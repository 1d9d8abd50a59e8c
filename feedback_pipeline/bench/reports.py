"""Benchmark: the reporting stage of one day (two model versions) at 1M and 10M predictions.

For each size N a day of N predictions is built (20 numeric and 3 categorical features, the
score, the latency, two segments; about 35% labeled) with a 100k-row reference; then, timed
separately, summed over the day's two model versions and repeated, median quoted:

- ``drift``: ``reports.drift_report`` (sampling included) against the reference;
- ``quality``: ``reports.quality_report`` on the labeled rows;
- ``save``: both reports written as HTML and JSON, and added to an Evidently workspace;
- ``mlflow``: the day's monitoring run logged to a SQLite MLflow store with the reports;
- ``total``: the four together for both versions, which is what ``monitoring_reports`` does.

Everything goes to a temporary data directory. Run it as::

    python -m feedback_pipeline.bench.reports --sizes 1000000 10000000 --repeats 3
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedback_pipeline.bench import synthetic
from feedback_pipeline.lib.settings import DATA_DIR_ENV

TARGETS = {1_000_000: 15.0, 10_000_000: 20.0}
FEATURES = [f"x{i:02d}" for i in range(20)]
CATEGORIES = ["plan", "channel", "device"]


def day_frame(n: int, seed: int) -> pd.DataFrame:
    """A day of ``n`` predictions with the columns the reports read."""
    rng = np.random.default_rng(seed)
    frame = synthetic.predictions(n, seed)
    for name in FEATURES:
        frame[name] = rng.normal(0, 1, n).astype(np.float64)
    for name in CATEGORIES:
        frame[name] = pd.Categorical(rng.choice(["a", "b", "c", "d"], n))
    frame["label"] = np.where(rng.random(n) < 0.35, frame["_truth"], np.nan)
    return frame


def measure(rows: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Times each step of the reporting stage for a day of ``rows`` predictions."""
    from feedback_pipeline.lib import reports, tracking, workspace
    from feedback_pipeline.lib.settings import load_settings

    settings = load_settings()
    current = day_frame(rows, seed)
    reference = day_frame(100_000, seed + 1)
    numeric, categorical = [*FEATURES, "score", "latency_ms"], [*CATEGORIES, "country", "platform"]
    start = time.perf_counter()
    import evidently  # noqa: F401  (its import is paid once per process, not per day)

    import_seconds = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in ("drift", "quality", "save", "mlflow")}
    versions = {str(v): rows for v, rows in current.groupby("model_version", observed=True)}
    for repeat in range(repeats):
        day = f"2026-10-{5 + repeat:02d}"
        spent = dict.fromkeys(times, 0.0)
        for version, rows_of_version in versions.items():  # as monitoring_reports does
            labeled = rows_of_version[rows_of_version["label"].notna()]
            clock = time.perf_counter()
            drift = reports.drift_report(
                rows_of_version,
                reference,
                numeric,
                categorical,
                day=day,
                model_version=version,
                sample_rows=settings.reports.sample_rows,
                seed=0,
            )
            spent["drift"] += time.perf_counter() - clock
            clock = time.perf_counter()
            quality = reports.quality_report(
                labeled,
                0.5,
                day=day,
                model_version=version,
                sample_rows=settings.reports.sample_rows,
                seed=0,
            )
            assert quality is not None
            spent["quality"] += time.perf_counter() - clock
            clock = time.perf_counter()
            paths = []
            for report in (drift, quality):
                paths += reports.save(report, settings.resolve("reports"))
                workspace.add_snapshot(settings, report)
            spent["save"] += time.perf_counter() - clock
            clock = time.perf_counter()
            numbers = {f"drift_{k}": v for k, v in drift.numbers.items() if isinstance(v, float)}
            tracking.log_monitoring_run(
                settings, day, version, metrics=numbers, params={"rows": str(rows)}, artifacts=paths
            )
            spent["mlflow"] += time.perf_counter() - clock
        for key, seconds in spent.items():
            times[key].append(seconds)
    totals = [sum(values) for values in zip(*times.values(), strict=True)]
    return {
        "rows": rows,
        "model_versions": len(current["model_version"].unique()),
        "labeled_rows": int(current["label"].notna().sum()),
        "sample_rows": settings.reports.sample_rows,
        "evidently_import_seconds": import_seconds,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "median_total_seconds": statistics.median(totals),
        "runs": times,
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints a table; writes the figures as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="data/bench/reports.json")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        os.environ[DATA_DIR_ENV] = workdir
        for rows in args.sizes:
            result = measure(rows, args.repeats)
            results.append(result)
            target = TARGETS.get(rows)
            passed = target is not None and result["median_total_seconds"] <= target
            verdict = "" if target is None else f"<= {target:g} s {'PASS' if passed else 'MISS'}"
            steps = "  ".join(f"{k} {v:.2f}" for k, v in result["median_seconds"].items())
            print(
                f"{rows:>12,} rows  total {result['median_total_seconds']:.2f} s  ({steps})  "
                f"{verdict}",
                flush=True,
            )
    print("Medians of the repeats; the Evidently import (paid once per process) is not included.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
