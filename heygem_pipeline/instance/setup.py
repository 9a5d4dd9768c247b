"""The persistent Dagster instance in ``DAGSTER_HOME``: created from the repository's ``dagster.yaml``, with the
``gpu`` pool limited to one slot so that however many runs are queued, one inference step runs at a time.

``python -m heygem_pipeline.instance init`` (``make setup`` runs it) is idempotent: it creates what is missing and
leaves everything else alone. ``info`` prints where the instance is and its pool limits.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from heygem_pipeline.settings import Settings

GPU_POOL = "gpu"
GPU_SLOTS = 1
REPO_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, or ``.dagster_home`` in the working directory (and exported, for child processes)."""
    home = Path(os.environ.get("DAGSTER_HOME") or Settings.from_env().dagster_home).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def prepare_home(home: Path | None = None) -> Path:
    """Create ``home`` with a ``dagster.yaml`` if it has none (never overwrites one)."""
    home = home or dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        if not REPO_DAGSTER_YAML.exists():
            raise FileNotFoundError(f"{config}: no instance settings, and no dagster.yaml beside the package to copy; "
                                    "install the project from its repository (pip install -e .) or put a "
                                    "dagster.yaml there")
        shutil.copyfile(REPO_DAGSTER_YAML, config)
    return home


def is_created(home: Path) -> bool:
    """Whether the instance in ``home`` has its storage already: then several processes may open it at once
    (creating it is not safe to race: each would create the same SQLite schemas)."""
    return (home / "dagster.yaml").exists() and (home / "history" / "runs.db").exists()


def init(home: Path | None = None, instance=None):  # -> DagsterInstance (dagster imported lazily: --help stays fast)
    """Open (creating if needed) the instance in ``home`` and make sure the ``gpu`` pool has one slot.

    ``instance``: one this process has already opened on ``home``, to use instead of opening another.
    """
    from dagster import DagsterInstance

    home = prepare_home(home)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = instance or DagsterInstance.get()
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
        if limits.get(GPU_POOL) != GPU_SLOTS:
            storage.set_concurrency_slots(GPU_POOL, GPU_SLOTS)
    return instance


def describe(instance) -> str:
    storage = instance.event_log_storage
    pools = {p.name: p.limit for p in storage.get_pool_limits()} if storage.supports_global_concurrency_limits else {}
    return f"DAGSTER_HOME={instance.root_directory}\npools: {pools or 'none'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heygem_pipeline.instance", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("init", "info"))
    args = parser.parse_args(argv)
    instance = init()
    if args.command == "info":
        print(describe(instance))
    return 0

