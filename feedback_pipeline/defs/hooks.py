"""What runs after every step of the project's jobs."""

import dagster as dg

from feedback_pipeline.lib import memory


@dg.success_hook(name="release_memory")
def release_memory(context: dg.HookContext) -> None:
    """Hands back the memory the step freed, so the next step starts with only what is live.

    The IO manager does it too around reads and writes; this also covers the checks, which
    read their days themselves.
    """
    memory.release_unused()


@dg.failure_hook(name="release_memory_after_failure")
def release_memory_after_failure(context: dg.HookContext) -> None:
    """The same after a failed step: the run goes on with the steps that do not depend on it."""
    memory.release_unused()


STEP_HOOKS = {release_memory, release_memory_after_failure}
