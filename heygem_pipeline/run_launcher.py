"""Kept for the class path that dagster.yaml files name (``heygem_pipeline.run_launcher.CeleryRunLauncher``)."""

from heygem_pipeline.instance.run_launcher import CeleryRunLauncher, embedded_broker_url

__all__ = ["CeleryRunLauncher", "embedded_broker_url"]
