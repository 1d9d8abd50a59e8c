"""The ingestion checks on passing and failing days, and the quarantine CLI end to end."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from feedback_pipeline.cli import main
from feedback_pipeline.definitions import defs
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.landing import landing_files
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

INGESTION = [dg.AssetKey("inference_log"), dg.AssetKey("feedback_events")]


def _ingest(instance: dg.DagsterInstance, day: dt.date) -> dict:
    result = (
        defs()
        .resolve_job_def("daily_monitoring_job")
        .execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=INGESTION,
            raise_on_error=False,
        )
    )
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


@pytest.fixture
def days(settings: Settings) -> list[dt.date]:
    config = small_config(settings, days=5)
    simulate_landing(settings, config)
    return [config.day(i) for i in range(5)]


def _parquet_part(settings: Settings, day: dt.date) -> Path:
    root = settings.resolve(settings.landing.inferences)
    return Path(next(p for p in landing_files(root, day) if p.endswith("part-0.parquet")))


def test_ordinary_days_pass_every_ingestion_check(settings, days) -> None:
    instance = dg.DagsterInstance.ephemeral()
    for day in days[:4]:
        checks = _ingest(instance, day)
    inference = {name: e.passed for (asset, name), e in checks.items() if asset == "inference_log"}
    assert inference == dict.fromkeys(
        [
            "rows_are_conserved",
            "quarantined_share_below_ceiling",
            "landing_data_exists",
            "volume_within_trailing_range",
            "model_version_shares_are_stable",
            "score_distribution_is_stable",
            "optional_columns_are_mostly_present",
        ],
        True,
    )
    gx = checks[("inference_log", "score_distribution_is_stable")].metadata["great_expectations"]
    assert {r["expectation"] for r in gx.value["results"]} == {
        "expect_column_values_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_quantile_values_to_be_between",
    }


def test_a_shifted_and_thin_day_fails_the_expectations(settings, days) -> None:
    instance = dg.DagsterInstance.ephemeral()
    for day in days[:4]:
        _ingest(instance, day)
    part = _parquet_part(settings, days[4])
    frame = pd.read_parquet(part)
    frame = frame.iloc[: len(frame) // 4].assign(
        score=lambda f: f["score"] ** 4, model_version="v2"
    )
    frame.to_parquet(part, index=False)
    for other in landing_files(settings.resolve(settings.landing.inferences), days[4]):
        if other != str(part):
            Path(other).unlink()

    checks = _ingest(instance, days[4])

    failed = {
        name for (asset, name), e in checks.items() if asset == "inference_log" and not e.passed
    }
    assert failed == {
        "volume_within_trailing_range",
        "model_version_shares_are_stable",
        "score_distribution_is_stable",
    }
    volume = checks[("inference_log", "volume_within_trailing_range")]
    assert volume.severity == dg.AssetCheckSeverity.WARN
    # The expectations see the valid rows: the part's rows less its quarantined ones.
    valid = storage.read_parquet(
        storage.partition_path(settings.resolve("warehouse"), "inference_log", days[4])
    )
    assert len(frame) - 5 < len(valid) <= len(frame)
    assert volume.metadata["great_expectations"].value["rows"] == len(valid)


@pytest.mark.parametrize(
    ("share", "passed", "severity"),
    [(0.05, False, dg.AssetCheckSeverity.WARN), (0.3, False, dg.AssetCheckSeverity.ERROR)],
)
def test_quarantined_share_warns_then_errors(settings, days, share, passed, severity) -> None:
    part = _parquet_part(settings, days[0])
    frame = pd.read_parquet(part)
    bad = frame.sample(frac=share * 1.7, random_state=1).index  # the part is 60% of the day
    frame.loc[bad, "score"] = 7.0
    frame.to_parquet(part, index=False)

    check = _ingest(dg.DagsterInstance.ephemeral(), days[0])[
        ("inference_log", "quarantined_share_below_ceiling")
    ]

    assert check.passed is passed
    assert check.severity == severity
    assert check.metadata["quarantined_share"].value > share


def test_a_day_without_landing_files_fails_the_landing_check(settings, days) -> None:
    missing = days[0] - dt.timedelta(days=0)
    for path in landing_files(settings.resolve(settings.landing.inferences), missing):
        Path(path).unlink()

    checks = _ingest(dg.DagsterInstance.ephemeral(), missing)

    landing = checks[("inference_log", "landing_data_exists")]
    assert landing.passed is False and landing.severity == dg.AssetCheckSeverity.ERROR
    assert landing.metadata["landing_files"].value == 0
    assert checks[("inference_log", "rows_are_conserved")].passed is True


def test_a_file_delivered_again_on_a_later_day_is_quarantined_as_duplicates(settings, days):
    instance = dg.DagsterInstance.ephemeral()
    _ingest(instance, days[0])
    again = _parquet_part(settings, days[0])
    target = Path(landing_files(settings.resolve(settings.landing.inferences), days[1])[0]).parent
    (target / "redelivered.parquet").write_bytes(again.read_bytes())

    _ingest(instance, days[1])

    quarantined = pd.read_parquet(
        Path(settings.resolve("quarantine"))
        / "inference_log"
        / f"date={days[1]}"
        / "part-0.parquet"
    )
    repeats = quarantined[quarantined["source_file"].str.endswith("redelivered.parquet")]
    assert len(repeats) == len(pd.read_parquet(again))
    assert set(repeats["reason"]) >= {"repeats an id already ingested on an earlier day"}


def test_quarantine_cli_lists_shows_exports_and_replays(settings, days, tmp_path, capsys):
    day = str(days[0])
    folder = Path(_parquet_part(settings, days[0])).parent
    rows = pd.read_parquet(_parquet_part(settings, days[0])).head(2)
    rows["request_id"] = ["extra-1", "extra-2"]
    rows["score"] = [1.5, 2.5]
    rows.to_csv(folder / "late-delivery.csv", index=False)
    assert main(["quarantine", "replay", "--asset", "inference_log", "--day", day]) == 0
    assert "quarantine 0 ->" in capsys.readouterr().out

    assert main(["quarantine", "list"]) == 0
    assert f"inference_log {day}" in capsys.readouterr().out

    check = "less_than_or_equal_to(1.0)"
    assert (
        main(["quarantine", "show", "--asset", "inference_log", "--day", day, "--check", check])
        == 0
    )
    shown = capsys.readouterr().out
    assert f"late-delivery.csv: row 0: score failed {check} (value 1.5)" in shown
    assert f"late-delivery.csv: row 1: score failed {check} (value 2.5)" in shown

    fixes = tmp_path / "fixes.jsonl"
    assert (
        main(
            [
                "quarantine",
                "show",
                "--asset",
                "inference_log",
                "--day",
                day,
                "--check",
                check,
                "--export",
                str(fixes),
            ]
        )
        == 0
    )
    capsys.readouterr()
    text = fixes.read_text()
    fixed = [line for line in text.splitlines() if "late-delivery.csv" in line]
    assert len(fixed) == 2
    edited = []
    for line in text.splitlines():
        record = json.loads(line)
        if record["request_id"] in ("extra-1", "extra-2"):
            record["score"] = float(record["score"]) / 10
        edited.append(json.dumps(record))
    fixes.write_text("\n".join(edited))

    for _ in range(2):  # replaying twice changes nothing the second time
        assert (
            main(
                [
                    "quarantine",
                    "replay",
                    "--asset",
                    "inference_log",
                    "--day",
                    day,
                    "--fixes",
                    str(fixes),
                ]
            )
            == 0
        )
    replays = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("inference_log")
    ]
    first, second = (line.split("quarantine ")[1].split(" rows")[0] for line in replays)
    before, after = (int(x) for x in first.split(" -> "))
    assert after <= before - 2
    assert second == f"{after} -> {after}"
    valid = pd.read_parquet(
        Path(settings.resolve("warehouse")) / "inference_log" / f"date={day}" / "part-0.parquet"
    )
    scores = valid.set_index("prediction_id").loc[["extra-1", "extra-2"], "score"]
    assert scores.tolist() == [0.15, 0.25]
    assert valid["prediction_id"].is_unique
