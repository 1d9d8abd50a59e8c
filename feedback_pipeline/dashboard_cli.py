"""Rebuilding the dashboard from the shell: the analysis assets, run in the persistent instance."""

from feedback_pipeline.lib.settings import load_settings


def build_dashboard() -> tuple[str, str, bool]:
    """Materializes the analysis and the dashboard; returns the page's path, run id and success."""
    import dagster as dg

    from feedback_pipeline.definitions import defs
    from feedback_pipeline.instance import prepare_dagster_home

    settings = load_settings()
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        result = (
            defs()
            .resolve_job_def("dashboard_job")
            .execute_in_process(
                instance=instance,
                tags={"feedback_pipeline/trigger": "cli"},
                raise_on_error=False,
            )
        )
    return f"{settings.resolve('dashboard')}/index.html", result.run_id, result.success
