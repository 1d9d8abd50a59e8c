"""Where the data lives and which settings are in force, as Dagster resources."""

import os
from collections.abc import Callable
from concurrent.futures import Future
from functools import cached_property
from typing import Any, ParamSpec, TypeVar

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr
from upath import UPath

from feedback_pipeline.lib import helper, memory, parallel, storage
from feedback_pipeline.lib.settings import InferenceColumns, Settings, load_settings


class PipelineSettings(dg.ConfigurableResource):
    """The settings file (empty: ``FEEDBACK_PIPELINE_SETTINGS`` or the shipped demo settings)."""

    settings_file: str = ""

    @cached_property
    def settings(self) -> Settings:
        """The parsed, checked settings."""
        return load_settings(self.settings_file or None)

    def data_path(self, name: str) -> str:
        """A location under the data directory."""
        return self.settings.resolve(name)

    def stored(
        self, asset: str, day: str, columns: list[str], only_present: bool = False
    ) -> pd.DataFrame:
        """Some columns of one stored day of an asset: checks read what they judge, no more.

        With ``only_present``, those of ``columns`` the day does not have are left out. First
        hands back the memory earlier steps freed (see ``lib/memory.py``), as the IO manager
        does before a step's inputs.
        """
        memory.release_unused()
        path = storage.partition_path(self.data_path("warehouse"), asset, day)
        return storage.read_parquet(path, columns=columns, only_present=only_present)

    def stored_rows(self, asset: str, day: str) -> int:
        """The rows of one stored day of an asset, from its Parquet footer alone."""
        return storage.parquet_rows(storage.partition_path(self.data_path("warehouse"), asset, day))


P = ParamSpec("P")
R = TypeVar("R")

# "0": the run's process hands the memory it frees back between steps (see ``lib/memory.py``).
HOLD_MEMORY_ENV = "FEEDBACK_PIPELINE_HOLD_MEMORY"
HELPER_ENV = "FEEDBACK_PIPELINE_HELPER"  # "0": no helper process, everything in the run's
# What the helper does as soon as the run starts, in the order the run needs it: Great
# Expectations for the ingestion checks, Evidently for the reports, MLflow for the runs.
PREPARE = [
    "great_expectations",
    "feedback_pipeline.lib.expectations:warm_up",
    "evidently",
    "evidently.metrics",
    "evidently.presets",
    "feedback_pipeline.lib.reports:warm_up",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
]

# Op tags of the checks the helper runs that only warn (Great Expectations). The helper spends
# the run's first seconds importing Evidently; at a lower priority these checks run when nothing
# else can, rather than keeping the day's attribution waiting for those imports.
HELPER_CHECK_TAGS = {"dagster/priority": "-1"}


class Helper(dg.ConfigurableResource):
    """The run's helper process, for the work that needs Evidently, Great Expectations or MLflow.

    Started when the run starts, so that it imports them while the first steps ingest the day
    (``lib/helper.py``); without it (``enabled: false``, or no fork) the work runs in the step.
    """

    enabled: bool = True
    _helper: helper.Helper | None = PrivateAttr(default=None)
    _begun: dict[str, Future] = PrivateAttr(default_factory=dict)
    _started: dict[str, Future] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Forks the helper, which begins its imports at once."""
        self._helper = helper.Helper(PREPARE)
        if self.enabled:
            self._helper.start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Ends the helper, and the work begun in it that no step collected."""
        if self._helper is not None:
            if self._helper.started:
                try:
                    self._helper.call(parallel.discard)
                except Exception as error:  # the helper broke: closing it ends its workers too
                    if context.log is not None:
                        context.log.warning(f"the helper could not end its workers: {error!r}")
            self._helper.close()

    @property
    def started(self) -> bool:
        """Whether calls go to the helper process."""
        return self._helper is not None and self._helper.started

    def call(self, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)``, in the helper if there is one."""
        if self._helper is None:
            return function(*args, **kwargs)
        return self._helper.call(function, *args, **kwargs)

    def begin(self, key: str, function: Callable[..., object], *args: object) -> None:
        """Begins ``function(*args)`` in a worker of the helper, without waiting for it.

        A later step collects the result through ``parallel.wait`` or ``parallel.finish`` under
        ``key``, in the helper, after checking ``begun(key)``. Without the helper, nothing is
        begun: that step does the work itself.
        """
        if self._helper is not None and self._helper.started:
            self._begun[key] = self._helper.submit(parallel.begin, key, function, *args)

    def begun(self, key: str) -> bool:
        """Whether work was begun under ``key`` in this run (waits until it is handed over)."""
        handed = self._begun.pop(key, None)
        if handed is None:
            return False
        try:
            handed.result()
        except Exception:  # not begun: the caller does the work itself
            return False
        return True

    def start(self, key: str, function: Callable[..., object], *args: object) -> None:
        """Starts ``function(*args)`` in the helper process itself, and returns at once.

        For light work with a small result, collected later in the run (``collect``): no worker
        is forked, so no process stays alive holding the libraries' pages until then. It must
        not use polars (the helper was forked after polars started its threads). Calls made
        meanwhile wait for it; what it read is handed back to the system once it is done.
        Without the helper, nothing is started: the step that collects does the work itself.
        """
        if self._helper is not None and self._helper.started:
            self._started[key] = self._helper.submit(memory.then_release, function, *args)

    def collect(self, context: dg.OpExecutionContext | dg.AssetCheckExecutionContext, key: str):
        """The result of the work started under ``key`` in this run; None if none was, or it failed.

        Work that failed is logged as a warning: the caller does it again itself, which raises
        the error in its own step if it is there to stay.
        """
        started = self._started.pop(key, None)
        if started is None:
            return None
        try:
            return started.result()
        except Exception as error:
            context.log.warning(f"the work started early as {key!r} failed ({error!r}): done again")
            return None

    def prepared(self) -> list[str]:
        """Waits for the helper's imports and warm-ups; those that failed, and why."""
        return [] if self._helper is None else self._helper.prepared()


class DailyParquetIOManager(dg.UPathIOManager):
    """Stores each day of an asset as ``<base>/<asset>/date=YYYY-MM-DD/part-0.parquet``.

    An input reads only the columns its metadata names, if it names any: ``columns``, plus the
    inference columns of the roles listed under ``settings_columns`` (``segments``,
    ``features``, ``categorical_features``), which only the settings know, and those of
    ``optional_columns`` that the day has. Parquet is columnar, and a step that needs ten
    columns of a wide day should not pay for the rest.
    """

    extension = ".parquet"

    def __init__(self, base_path: UPath, inference_columns: InferenceColumns | None = None):
        super().__init__(base_path=base_path)
        self.inference_columns = inference_columns

    def get_path_for_partition(self, context: Any, path: UPath, partition: str) -> UPath:
        """Hive-style day folders, so any Parquet reader sees the partition column."""
        return path / f"date={partition}" / "part-0"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        """Writes atomically: a crash leaves the previous day, never half of a new one.

        A long day is written as part files side by side, a thread per core (see
        ``storage.write_parquet``). An asset whose metadata names another under ``extends``
        stores only the columns that asset's day lacks, with the key its rows are paired by
        (``extends_on``, default ``prediction_id``), and its reads give both; one that names a
        ``rows_key`` stores the fingerprint of that column, by which a day extending it knows
        whether its rows are still the ones it was made on. Then hands back the memory the step
        freed (see ``lib/memory.py``).
        """
        metadata = context.definition_metadata or {}
        extends = metadata.get("extends")
        base = None  # an asset whose day extends another's: the same day of that asset
        if extends:
            base = str(path.parent.parent.parent / extends / path.parent.name / path.name)
        storage.write_parquet(
            obj,
            str(path),
            threads=parallel.default_workers(),
            extends=base,
            key=metadata.get("extends_on", "prediction_id"),
            rows_key=metadata.get("rows_key"),
        )
        memory.release_unused()

    def load_input(self, context: dg.InputContext) -> Any:
        """Loads as the base class does; an optional input not materialized yet is None.

        First hands back the memory earlier steps freed (see ``lib/memory.py``).
        """
        memory.release_unused()
        try:
            return super().load_input(context)
        except FileNotFoundError:
            if (context.definition_metadata or {}).get("optional"):
                return None
            raise

    def load_partitions(self, context: dg.InputContext) -> Any:
        """Several days as {day: frame}; with ``allow_missing_partitions``, only the stored ones.

        The base class warns of each day in reach that is not stored yet, and a night's labeling
        reads the seven feedback days after its own, none of which has come yet: seven warnings
        every night, and each a row in the run's event log. Those days are expected to be
        missing, so they are named once, at debug level; the assets say how many days they read.
        """
        keys = context.asset_partition_keys
        if len(keys) < 2 or not (context.definition_metadata or {}).get("allow_missing_partitions"):
            return super().load_partitions(context)
        paths = self._get_paths_for_partitions(context)  # pyright: ignore[reportPrivateUsage]
        days, missing = {}, []
        for key in keys:
            try:
                days[key] = self.load_from_path(context, paths[key])
            except FileNotFoundError:
                missing.append(key)
        if missing:
            context.log.debug(f"{len(missing)} of {len(keys)} days not stored yet: {missing}")
        return days

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        """Reads one partition; a missing one raises FileNotFoundError as the base class expects.

        Of the columns named by the settings, those the day does not have are left out.
        """
        metadata = context.definition_metadata or {}
        columns = metadata.get("columns")
        roles = metadata.get("settings_columns") or []
        optional = metadata.get("optional_columns") or []
        if not columns:
            return storage.read_parquet(str(path))
        if not roles:
            return storage.read_parquet(str(path), columns=list(columns), optional=optional)
        if self.inference_columns is None:
            raise ValueError(f"{context.asset_key}: settings_columns need the settings")
        named = [name for role in roles for name in getattr(self.inference_columns, role)]
        wanted = list(dict.fromkeys([*columns, *named, *optional]))
        return storage.read_parquet(str(path), columns=wanted, only_present=True)


class WarehouseIOManager(dg.ConfigurableIOManagerFactory):
    """The warehouse of asset outputs, under the data directory unless ``base_dir`` is given."""

    pipeline: dg.ResourceDependency[PipelineSettings]
    base_dir: str = ""
    # Keep the memory the run frees until it ends (``memory.hold``); set by HOLD_MEMORY_ENV.
    hold_memory: bool = True

    def create_io_manager(self, context: dg.InitResourceContext) -> DailyParquetIOManager:
        """Builds the IO manager on the configured root."""
        root = self.base_dir or self.pipeline.data_path("warehouse")
        return DailyParquetIOManager(UPath(root), self.pipeline.settings.inference_columns)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Sets the objects the run starts with out of the collector's sight while it runs.

        The collection at each step boundary (``memory.release_unused``) is then cheap. And,
        with ``hold_memory``, the process keeps what glibc frees until the run is over
        (``memory.hold``): the steps' arrays reuse each other's pages instead of faulting in
        fresh ones, for a higher peak.
        """
        memory.settle()
        if self.hold_memory:
            memory.hold()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Brings them back once the run is over, and hands back the memory kept."""
        memory.unsettle()
        memory.let_go()


def build_resources() -> dict[str, Any]:
    """The resources every asset of the project can ask for."""
    pipeline = PipelineSettings(
        settings_file=dg.EnvVar("FEEDBACK_PIPELINE_SETTINGS").get_value("") or ""
    )
    return {
        "pipeline": pipeline,
        "io_manager": WarehouseIOManager(
            pipeline=pipeline, hold_memory=os.environ.get(HOLD_MEMORY_ENV, "1") != "0"
        ),
        "helper": Helper(enabled=os.environ.get(HELPER_ENV, "1") != "0"),
    }


@dg.definitions
def resources() -> dg.Definitions:
    """Resources gathered in one place."""
    return dg.Definitions(resources=build_resources())
