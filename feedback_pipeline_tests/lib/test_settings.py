"""The settings file: the shipped default, duration parsing and one clear error per mistake."""

import datetime as dt
from pathlib import Path

import pytest
import yaml

from feedback_pipeline.lib.settings import (
    DATA_DIR_ENV,
    SETTINGS_ENV,
    FeedbackKind,
    MissingFeedbackPolicy,
    SettingsError,
    default_settings_path,
    load_settings,
    parse_duration,
)


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def _default_raw() -> dict:
    return yaml.safe_load(default_settings_path().read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict, name: str = "settings.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _error_for(path: Path) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    return str(caught.value)


def test_shipped_default_loads_with_the_demo_values() -> None:
    settings = load_settings()

    assert settings.model_name == "conversion_propensity"
    assert settings.score_cutoff == 0.5
    assert settings.label_window == dt.timedelta(days=7)
    assert settings.longest_window == dt.timedelta(days=7)
    assert settings.window_days == 7
    assert settings.feedback_kinds[FeedbackKind.CLICK].window == dt.timedelta(hours=1)
    assert settings.label_kinds == [FeedbackKind.CORRECTION, FeedbackKind.LABEL]
    assert settings.missing_feedback_policy == MissingFeedbackPolicy.EXCLUDE
    assert settings.inference_columns.prediction_id == "request_id"
    assert len(settings.inference_columns.features) == 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("30m", dt.timedelta(minutes=30)),
        ("1h", dt.timedelta(hours=1)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
        (" 1.5h ", dt.timedelta(minutes=90)),
    ],
)
def test_parse_duration_reads_each_unit(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_passes_a_timedelta_through() -> None:
    assert parse_duration(dt.timedelta(minutes=5)) == dt.timedelta(minutes=5)


@pytest.mark.parametrize("bad", ["soon", "7", "7 days", "-1d", "1y", "", "h", 7, None])
def test_parse_duration_rejects_anything_else(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as '1h' or '7d'"):
        parse_duration(bad)


def test_wrong_type_names_the_file_the_key_and_the_value(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["score_cutoff"] = "high"
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message.startswith(f"{path}: ")
    assert "score_cutoff: Input should be a valid number" in message
    assert "(got 'high')" in message


def test_unknown_key_is_reported_as_a_likely_typo(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["score_cutof"] = 0.6
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message == f"{path}: score_cutof: unknown key (check its spelling)"


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    raw = _default_raw()
    del raw["model_name"]
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message == f"{path}: model_name: Field required"


def test_bad_window_names_the_kind_and_the_value(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["feedback_kinds"]["thumb"]["window"] = "soon"
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message.startswith(f"{path}: feedback_kinds.thumb.window: ")
    assert "expected a duration such as '1h' or '7d', got 'soon'" in message


def test_zero_window_is_rejected(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["feedback_kinds"]["click"]["window"] = "0s"
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message.startswith(f"{path}: feedback_kinds.click.window: ")
    assert "the attribution window must be longer than zero" in message


def test_label_kind_without_a_feedback_kind_entry_is_named(tmp_path: Path) -> None:
    raw = _default_raw()
    del raw["feedback_kinds"]["correction"]
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert message.startswith(f"{path}: ")
    assert "label_kinds ['correction'] have no entry under feedback_kinds" in message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model_name: [unclosed\nscore_cutoff: 0.5\n", encoding="utf-8")

    message = _error_for(path)

    assert message.startswith(f"{path}: not valid YAML: ")


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- model_name\n- score_cutoff\n", encoding="utf-8")

    message = _error_for(path)

    assert message == f"{path}: expected a mapping of settings, got list"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "settings.yaml"

    message = _error_for(path)

    assert message == f"{path}: cannot read the settings file: No such file or directory"


def test_several_problems_are_reported_in_one_error(tmp_path: Path) -> None:
    raw = _default_raw()
    raw["score_cutoff"] = 1.5
    del raw["model_name"]
    path = _write(tmp_path, raw)

    message = _error_for(path)

    assert "model_name: Field required" in message
    assert "score_cutoff: Input should be less than 1 (got 1.5)" in message
    assert message.count("; ") == 1


def test_settings_env_var_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _default_raw()
    raw["model_name"] = "churn_model"
    raw["score_cutoff"] = 0.3
    path = _write(tmp_path, raw, "mine.yaml")
    monkeypatch.setenv(SETTINGS_ENV, str(path))

    settings = load_settings()

    assert settings.model_name == "churn_model"
    assert settings.score_cutoff == 0.3


def test_settings_env_var_errors_name_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "absent.yaml"
    monkeypatch.setenv(SETTINGS_ENV, str(path))

    with pytest.raises(SettingsError, match=r"absent\.yaml: cannot read the settings file"):
        load_settings()


def test_data_dir_env_var_overrides_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    settings = load_settings()

    assert settings.data_root == str(tmp_path.resolve())
    assert settings.resolve("landing/inferences") == f"{tmp_path.resolve()}/landing/inferences"


def test_data_root_defaults_to_data_dir_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()

    assert settings.data_root == str((tmp_path / "data").resolve())


def test_resolve_leaves_absolute_paths_and_urls_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    settings = load_settings()

    assert settings.resolve("/srv/landing") == "/srv/landing"
    assert settings.resolve("s3://bucket/landing") == "s3://bucket/landing"


def test_a_label_kind_that_averages_or_sums_is_refused(tmp_path) -> None:
    import yaml

    from feedback_pipeline.lib.settings import SettingsError, default_settings_path, load_settings

    raw = yaml.safe_load(default_settings_path().read_text())
    raw["feedback_kinds"]["label"]["conflict"] = "sum"
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError, match=r"label kinds \['label'\] need a conflict rule"):
        load_settings(path)


@pytest.mark.parametrize("bad", [True, "2", 0, 65, 1.5])
def test_report_workers_is_a_whole_number_of_processes(tmp_path: Path, bad: object) -> None:
    raw = _default_raw()
    raw["reports"]["workers"] = bad

    assert "reports.workers" in _error_for(_write(tmp_path, raw))
