"""Replaying quarantined rows: store the fixes, then re-run the day's ingestion through Dagster."""

from dataclasses import dataclass

from feedback_pipeline.lib import quarantine, storage
from feedback_pipeline.lib.settings import load_settings


@dataclass(frozen=True)
class ReplayOutcome:
    """Quarantined and valid rows before and after, and the Dagster run that re-ingested."""

    before: int
    after: int
    valid_before: int
    valid_after: int
    run_id: str
    success: bool


def _valid_rows(root: str, asset: str, day: str) -> int:
    return storage.row_counts(root, asset, [day]).get(day, 0)


def replay(asset: str, day: str, fixes_path: str | None = None) -> ReplayOutcome:
    """Adds the fixed records (if any) to the day's corrections and re-materializes the asset."""
    import dagster as dg

    from feedback_pipeline.definitions import defs
    from feedback_pipeline.instance import prepare_dagster_home

    settings = load_settings()
    root, warehouse = settings.resolve("quarantine"), settings.resolve("warehouse")
    before, valid_before = (
        len(quarantine.load(root, asset, day)),
        _valid_rows(warehouse, asset, day),
    )
    if fixes_path:
        fixes = quarantine.read_fixes(fixes_path)
        quarantine.add_corrections(settings.resolve("corrections"), asset, day, fixes)
    prepare_dagster_home(settings)
    job = defs().resolve_job_def("daily_monitoring_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            partition_key=day,
            instance=instance,
            asset_selection=[dg.AssetKey(asset)],
            tags={"feedback_pipeline/replay": "true"},
            raise_on_error=False,
        )
    return ReplayOutcome(
        before=before,
        after=len(quarantine.load(root, asset, day)),
        valid_before=valid_before,
        valid_after=_valid_rows(warehouse, asset, day),
        run_id=result.run_id,
        success=result.success,
    )
