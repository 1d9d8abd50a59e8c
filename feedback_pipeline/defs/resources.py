"""Where the data lives and which settings are in force, as Dagster resources."""

from functools import cached_property
from typing import Any

import dagster as dg
import pandas as pd
from upath import UPath

from feedback_pipeline.lib import memory, storage
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
        """Writes atomically: a crash leaves the previous file, never half of a new one.

        Then hands back the memory the step freed (see ``lib/memory.py``).
        """
        storage.write_parquet(obj, str(path))
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

    def create_io_manager(self, context: dg.InitResourceContext) -> DailyParquetIOManager:
        """Builds the IO manager on the configured root."""
        root = self.base_dir or self.pipeline.data_path("warehouse")
        return DailyParquetIOManager(UPath(root), self.pipeline.settings.inference_columns)


def build_resources() -> dict[str, Any]:
    """The resources every asset of the project can ask for."""
    pipeline = PipelineSettings(
        settings_file=dg.EnvVar("FEEDBACK_PIPELINE_SETTINGS").get_value("") or ""
    )
    return {"pipeline": pipeline, "io_manager": WarehouseIOManager(pipeline=pipeline)}


@dg.definitions
def resources() -> dg.Definitions:
    """Resources gathered in one place."""
    return dg.Definitions(resources=build_resources())
