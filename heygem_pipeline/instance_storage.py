"""Kept for the class paths that dagster.yaml files name (``heygem_pipeline.instance_storage.*``)."""

from heygem_pipeline.instance.storage import FileComputeLogManager, SharedIndexSqliteEventLogStorage

__all__ = ["FileComputeLogManager", "SharedIndexSqliteEventLogStorage"]
