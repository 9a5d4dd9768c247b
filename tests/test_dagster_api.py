"""The non-public Dagster APIs this project builds on have the signatures it was written against.

instance_storage.py overrides methods of Dagster's SQLite storage and compute log manager, run_launcher.py extends
dagster-celery's launcher, instance/worker.py registers its tasks, and client/submit.py creates and submits runs the way
`dagster job launch` does. Dagster is pinned to exact versions (pyproject.toml); this test fails when an upgrade
changes any of those signatures, or when an override is added without being listed here, so that an upgrade is
reviewed rather than discovered in production.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import dagster
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.run_coordinator import RunCoordinator
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from heygem_pipeline.instance import run_launcher as run_launcher
from heygem_pipeline.instance import storage as instance_storage

PINNED = {"dagster": "1.13.27", "dagster-webserver": "1.13.27", "dagster-graphql": "1.13.27",
          "dagster-celery": "0.29.27", "dagster-postgres": "0.29.27"}

OVERRIDDEN = {
    LocalComputeLogManager: {
        "capture_logs": "self, log_key",
        "config_type": "",
        "from_config_value": "inst_data, config_value",
    },
    SqliteEventLogStorage: {
        "__init__": "self, base_dir, inst_data=None",
        "config_type": "",
        "from_config_value": "inst_data, config_value",
        "index_connection": "self",
        "has_table": "self, table_name",
        "_initdb": "self, engine, for_index_shard=False",
        "add_dynamic_partitions": "self, partitions_def_name, partition_keys",
        "claim_concurrency_slot": "self, concurrency_key, run_id, step_key, priority=None",
        "free_concurrency_slots_for_run": "self, run_id",
        "free_concurrency_slot_for_step": "self, run_id, step_key",
        "assign_pending_steps": "self, concurrency_keys",
        "set_concurrency_slots": "self, concurrency_key, num",
        "delete_concurrency_limit": "self, concurrency_key",
        "initialize_concurrency_limit_to_default": "self, concurrency_key",
        "dispose": "self",
    },
    CeleryRunLauncher: {
        "__init__": "self, default_queue, broker=None, backend=None, include=None, config_source=None, "
                    "inst_data=None",
        "from_config_value": "inst_data, config_value",
        "terminate": "self, run_id",
        "check_run_worker_health": "self, run",
    },
}

CALLED = {
    "LocalComputeLogManager.__init__": (LocalComputeLogManager.__init__,
                                        "self, base_dir, polling_timeout=None, inst_data=None"),
    "LocalComputeLogManager.get_captured_local_path": (LocalComputeLogManager.get_captured_local_path,
                                                       "self, log_key, extension, partial=False"),
    "LocalComputeLogManager.complete_artifact_path": (LocalComputeLogManager.complete_artifact_path,
                                                      "self, log_key"),
    "SqliteEventLogStorage._connect": (SqliteEventLogStorage._connect, "self, shard"),
    "SqliteEventLogStorage.conn_string_for_shard": (SqliteEventLogStorage.conn_string_for_shard, "self, shard_name"),
    "SqliteEventLogStorage._check_partitions_table": (SqliteEventLogStorage._check_partitions_table, "self"),
    "redirect_to_file": (redirect_to_file, "stream, filepath"),
    "create_execute_job_task": (create_execute_job_task, "celery, **task_kwargs"),
    "create_resume_job_task": (create_resume_job_task, "celery, **task_kwargs"),
    "WorkspaceProcessContext.__init__": (
        WorkspaceProcessContext.__init__, "self, instance, workspace_load_target, version='', read_only=False, "
        "grpc_server_registry=None, code_server_log_level='INFO', server_command=<GrpcServerCommand.API_GRPC: "
        "'api_grpc'>"),
    "WorkspaceProcessContext.create_request_context": (WorkspaceProcessContext.create_request_context,
                                                       "self, source=None"),
    "JobSubsetSelector": (JobSubsetSelector, "location_name, repository_name, job_name, op_selection, "
                                             "asset_selection=None, asset_check_selection=None"),
    "CodeLocation.get_job": (CodeLocation.get_job, "self, selector"),
    "CodeLocation.get_execution_plan": (CodeLocation.get_execution_plan,
                                        "self, remote_job, run_config, step_keys_to_execute, known_state, "
                                        "instance=None"),
    "DagsterInstance.create_run": (
        dagster.DagsterInstance.create_run,
        "self, job_name:kw, run_id:kw, run_config:kw, status:kw, tags:kw, root_run_id:kw, parent_run_id:kw, "
        "step_keys_to_execute:kw, execution_plan_snapshot:kw, job_snapshot:kw, parent_job_snapshot:kw, "
        "asset_selection:kw, asset_check_selection:kw, resolved_op_selection:kw, op_selection:kw, "
        "remote_job_origin:kw, job_code_origin:kw, asset_graph:kw"),
    "DagsterInstance.submit_run": (dagster.DagsterInstance.submit_run, "self, run_id, workspace"),
    "DagsterInstance.get_daemon_heartbeats": (dagster.DagsterInstance.get_daemon_heartbeats, "self"),
    "RunCoordinator.cancel_run": (RunCoordinator.cancel_run, "self, run_id"),
}


def parameters(function: object) -> str:
    """Names, kinds and defaults of ``function``'s parameters (annotations left out: only calls matter)."""
    parts = []
    for parameter in inspect.signature(function).parameters.values():
        text = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "") + parameter.name
        if parameter.kind == parameter.KEYWORD_ONLY:
            text += ":kw"
        if parameter.default is not parameter.empty:
            text += f"={parameter.default!r}"
        parts.append(text)
    return ", ".join(parts)


def test_dagster_is_the_pinned_version() -> None:
    assert {name: version(name) for name in PINNED} == PINNED


def test_every_override_is_listed_with_the_signature_it_was_written_against() -> None:
    ours = {LocalComputeLogManager: instance_storage.FileComputeLogManager,
            SqliteEventLogStorage: instance_storage.SharedIndexSqliteEventLogStorage,
            CeleryRunLauncher: run_launcher.CeleryRunLauncher}
    for base, subclass in ours.items():
        overrides = {name for name, value in vars(subclass).items()
                     if hasattr(base, name) and (callable(value) or isinstance(value, classmethod | staticmethod))}
        assert overrides == set(OVERRIDDEN[base]), f"{subclass.__name__}: list its overrides here"
        for name, expected in OVERRIDDEN[base].items():
            assert parameters(getattr(base, name)) == expected, f"{base.__name__}.{name} changed"


def test_the_other_private_calls_keep_their_signatures() -> None:
    for name, (function, expected) in CALLED.items():
        assert parameters(function) == expected, f"{name} changed"
    assert WorkspaceFileTarget._fields == ("paths",)
