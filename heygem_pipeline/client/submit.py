"""Submitting runs to the Dagster instance from a client, the way ``dagster job launch`` does: the run is created
from the code location's job snapshot and handed to the instance's run coordinator (the daemon dequeues it and the
run launcher starts it on a worker). Nothing is executed here.

This is the one module that uses Dagster's non-public workspace API (no public Python API submits a run to the
queue without a webserver); ``tests/test_dagster_api.py`` pins the signatures it relies on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, MultiPartitionKey
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.errors import DagsterRunAlreadyExists
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from assets.partitions import partition_tags

# Run ids derived from what the run is for: two clients submitting the same work at once create the same id, the
# storage's unique key lets one of them in, and the other follows that run (SQLite and Postgres alike).
RUN_ID_NAMESPACE = uuid.UUID("8f0c6f61-6a39-4f8e-9a53-1f0a5c6b2d11")


def work_run_id(item: str, token: str, attempt: int) -> str:
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{item}\0{token}\0{attempt}"))


class RunSubmitter:
    """Creates and submits runs of the code location's jobs; use as a context manager (it holds a workspace)."""

    def __init__(self, instance: DagsterInstance, workspace: Path, location_name: str) -> None:
        self.instance = instance
        self._workspace_file = workspace
        self._location_name = location_name
        self._stack = ExitStack()
        self._plans: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> RunSubmitter:
        context = self._stack.enter_context(
            WorkspaceProcessContext(self.instance, WorkspaceFileTarget(paths=[str(self._workspace_file)])))
        self._request = context.create_request_context()
        errors = self._request.get_code_location_error(self._location_name)
        if errors is not None:
            raise RuntimeError(f"code location {self._location_name} did not load: {errors.message}")
        self._location = self._request.get_code_location(self._location_name)
        self._repository = next(iter(self._location.get_repositories().values()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def submit(self, job_name: str, partition: str | MultiPartitionKey, run_config: Mapping[str, Any],
               tags: Mapping[str, str], run_id: str) -> bool:
        """Create run ``run_id`` and put it in the run queue; False when a run with that id exists already."""
        selector = JobSubsetSelector(location_name=self._location.name, repository_name=self._repository.name,
                                     job_name=job_name, op_selection=None)
        job = self._location.get_job(selector)
        # The plan depends on the job and its config, not the partition: asked of the code server once per pair.
        plan_key = (job_name, json.dumps(run_config, sort_keys=True))
        if plan_key not in self._plans:
            self._plans[plan_key] = self._location.get_execution_plan(
                job, run_config, step_keys_to_execute=None, known_state=None,
                instance=self.instance).execution_plan_snapshot
        plan = self._plans[plan_key]
        try:
            run = self.instance.create_run(
                job_name=job_name, run_id=run_id, run_config=run_config, status=None,
                tags={**job.tags, **partition_tags(partition), **tags}, root_run_id=None, parent_run_id=None,
                step_keys_to_execute=plan.step_keys_to_execute, execution_plan_snapshot=plan,
                job_snapshot=job.job_snapshot, parent_job_snapshot=job.parent_job_snapshot, asset_selection=None,
                asset_check_selection=None, resolved_op_selection=None, op_selection=None,
                remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(),
                asset_graph=self._repository.asset_graph)
        except DagsterRunAlreadyExists:
            return False
        self.instance.submit_run(run.run_id, self._request)
        return True



