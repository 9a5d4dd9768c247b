"""``heygem worker``: a Celery worker that executes the runs Dagster launches on its queues (dagster-celery's run
task, with the broker and backend of the instance's run launcher in ``$DAGSTER_HOME/dagster.yaml``).

The worker imports Dagster, the definitions and the media stack once, before Celery forks its pool processes, so a
run starts warm; the engine and MediaPipe load in the pool process on its first run and stay for the next ones.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

QUEUES = ("gpu", "cpu")
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no orphans after a kill -9 of the parent)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _pool_process_init(**_: object) -> None:
    die_with_parent()
    # Billiard's pool processes ignore SIGINT; a terminated run is interrupted with it (run_launcher.terminate),
    # which Dagster's run worker turns into a clean cancellation.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def celery_app():
    """The Celery app of the instance's run launcher, with dagster-celery's run tasks registered."""
    from dagster import DagsterInstance
    from dagster_celery.launcher import CeleryRunLauncher
    from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

    launcher = DagsterInstance.get().run_launcher
    if not isinstance(launcher, CeleryRunLauncher):
        raise SystemExit(f"the instance in $DAGSTER_HOME={os.environ.get('DAGSTER_HOME')} does not launch runs with "
                         "Celery (run_launcher in its dagster.yaml): a worker has nothing to take")
    app = launcher.celery
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


def run_worker(queues: Sequence[str], concurrency: int = 1, name: str | None = None,
               loglevel: str = "WARNING") -> None:
    """Start a worker on ``queues`` in this process (returns when the worker stops)."""
    from celery import signals

    app = celery_app()
    # Warm before the fork: what every run imports (the code location, the media stack).
    import heygem_pipeline.definitions
    import heygem_pipeline.engine.quality  # noqa: F401

    signals.worker_process_init.connect(_pool_process_init, weak=False)
    node = name or f"{'+'.join(queues)}-{os.getpid()}@%h"
    app.worker_main(["worker", "--queues", ",".join(queues), "--concurrency", str(concurrency), "--hostname", node,
                     "--pool", "prefork", "--without-gossip", "--without-mingle", "--loglevel", loglevel])
