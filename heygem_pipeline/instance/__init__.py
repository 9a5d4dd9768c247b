"""The Dagster instance on this machine and what dagster.yaml names: set-up, services, workers, the webserver.

``python -m heygem_pipeline.instance init|info`` (``make setup`` runs ``init``) is kept by ``__main__``.
"""

from heygem_pipeline.instance.setup import GPU_POOL, GPU_SLOTS, dagster_home, describe, init, is_created, prepare_home

__all__ = ["GPU_POOL", "GPU_SLOTS", "dagster_home", "describe", "init", "is_created", "prepare_home"]
