"""The instance's run launcher: dagster-celery's ``CeleryRunLauncher``, which runs each launched run inside a
long-lived Celery worker (Dagster, the definitions and the loaded engine stay warm between runs), with three
changes configured in ``dagster.yaml``:

- broker and result backend default to the embedded Redis that ``heygem run``/``heygem ui`` start on a unix socket
  in ``$DAGSTER_HOME/run/`` (a yaml file cannot build that path itself);
- the health check that run monitoring calls also notices a worker that died with its run. dagster-celery reads
  only the task's state, which stays STARTED for good when the whole worker is killed (kill -9, out of memory, a
  lost host): nothing is left to report the failure, and the run would hold its ``gpu`` slot for ever. Here a
  STARTED task is also looked for among the active tasks of the worker that took it;
- terminating a run marks it CANCELING (dagster-celery's does not, so the UI's Terminate ended runs FAILED) and
  interrupts it (SIGINT, which Dagster turns into a clean cancellation of the step, its subprocesses and its
  partial files) instead of killing the worker's process outright (SIGTERM).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from dagster import DagsterRun
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._serdes import ConfigurableClassData
from dagster_celery.launcher import CeleryRunLauncher as DagsterCeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

# dagster-celery registers its run task again at every launch; Celery 5.5+ warns each time that the name is taken
# (the first registration, identical, is the one used).
warnings.filterwarnings("ignore", message="Task name 'execute_job' is already registered")

# How long a worker has to answer "which tasks are you running?" before it counts as gone. Workers answer from
# their main process, which a busy run does not block.
INSPECT_TIMEOUT_SECONDS = 2.0


def embedded_broker_url(home: str | None = None) -> str:
    """The embedded Redis of ``home`` (default ``$DAGSTER_HOME``), as Celery/kombu address a unix socket."""
    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError("DAGSTER_HOME is not set: set it to the instance's folder, or give the run launcher's "
                           "broker in dagster.yaml")
    return f"redis+socket://{os.path.join(os.path.abspath(home), 'run', 'redis.sock')}"


class CeleryRunLauncher(DagsterCeleryRunLauncher):
    """``dagster_celery.launcher.CeleryRunLauncher`` with the embedded broker by default, a health check that
    notices dead workers, and runs interrupted rather than killed on termination."""

    def __init__(self, default_queue: str, broker: str | None = None, backend: str | None = None,
                 include: list[str] | None = None, config_source: dict | None = None,
                 inst_data: ConfigurableClassData | None = None) -> None:
        self.embedded = broker is None
        broker = broker or embedded_broker_url()
        # The socket transport's result backend is plain redis+socket as well.
        backend = backend if backend and backend != "rpc://" else broker
        super().__init__(default_queue=default_queue, broker=broker, backend=backend, include=include,
                         config_source=config_source, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
                          ) -> CeleryRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or DAGSTER_CELERY_TASK_ID_TAG not in run.tags:
            return False
        # As Dagster's own launchers do: the run is CANCELING first, so its interrupted step ends it CANCELED.
        self._instance.report_run_canceling(run)
        # SIGINT: Dagster's run worker turns it into an interruption of the step (see heygem_pipeline.instance.worker).
        self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).revoke(terminate=True, signal="SIGINT")
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        result = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG])
        started = result.info if isinstance(result.info, dict) else {}
        worker = started.get("hostname")
        if not worker:
            return health
        # limit=1: done at the first (only) reply instead of waiting out the timeout for more.
        replies = self.celery.control.inspect(destination=[worker], timeout=INSPECT_TIMEOUT_SECONDS, limit=1).active()
        if not replies or worker not in replies:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery worker {worker} does not answer: it died "
                                        "with the run (killed, out of memory, or its host was lost).")
        if any(task.get("id") == result.task_id for task in replies[worker]):
            return health
        if self.celery.AsyncResult(result.task_id).state != "STARTED":  # it finished in the meantime
            return super().check_run_worker_health(run)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery worker {worker} no longer runs this run's task "
                                    "(its process was killed, or the worker restarted).")
