"""Rolling back a promotion: ``previous_champion`` becomes ``champion`` again, everywhere.

The aliases move in the MLflow registry (and a rollback run is recorded there); the Dagster
instance records a ``model_promotion`` event with the restored champion's baseline, so the
retraining sensor measures drops from it again; and the drift reference is rebuilt from the
restored champion's training data.
"""

from dataclasses import dataclass

from feedback_pipeline.lib import registry
from feedback_pipeline.lib.settings import load_settings


@dataclass(frozen=True)
class RollbackOutcome:
    """Which version came back, which went, and the reference rebuild (if run)."""

    restored: str
    demoted: str
    reference_run_id: str | None
    reference_rebuilt: bool


def rollback(reason: str = "", *, rebuild_reference: bool = True) -> RollbackOutcome:
    """Restores the previous champion; raises `registry.RegistryError` when there is none."""
    import dagster as dg

    from feedback_pipeline.definitions import defs
    from feedback_pipeline.defs.training.assets import PROMOTION
    from feedback_pipeline.instance import prepare_dagster_home

    settings = load_settings()
    restored, demoted = registry.rollback(settings, reason)
    prepare_dagster_home(settings)
    baseline = registry.baseline(restored)
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=PROMOTION,
                description=f"rollback: version {demoted.version} -> {restored.version}",
                metadata={
                    "decision": "rollback",
                    "champion_version": restored.version,
                    "serving_label": restored.serving_label,
                    "demoted_version": demoted.version,
                    "reason": reason or "manual rollback",
                    "trained_through": restored.tags.get(f"{registry.TAG}trained_through", ""),
                    **{f"baseline__{k}": v for k, v in baseline.items()},
                },
            )
        )
        run_id, rebuilt = None, False
        if rebuild_reference:
            job = defs().resolve_job_def("reference_job")
            result = job.execute_in_process(
                instance=instance,
                tags={"feedback_pipeline/rollback": restored.version},
                raise_on_error=False,
            )
            run_id, rebuilt = result.run_id, result.success
    return RollbackOutcome(restored.version, demoted.version, run_id, rebuilt)
