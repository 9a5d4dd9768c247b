"""The instance `make setup` creates: the repository's dagster.yaml, one gpu slot, step logs kept for the UI, an
event index that keeps one connection per process yet shares its writes with every other process at once, and run
databases made as Dagster makes them."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from heygem_pipeline.instance.setup import GPU_POOL, init
from heygem_pipeline.instance.storage import FileComputeLogManager, SharedIndexSqliteEventLogStorage
from tests.helpers import REPO


@pytest.fixture()
def instance(dagster_home: Path):
    return init(dagster_home)


def test_gpu_pool_has_one_slot(instance) -> None:
    limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    assert limits[GPU_POOL] == 1


def _in_another_process(home: Path, code: str) -> str:
    prelude = "from dagster import DagsterInstance; instance = DagsterInstance.get(); "
    result = subprocess.run([sys.executable, "-c", prelude + code], env={**os.environ, "DAGSTER_HOME": str(home)},
                            cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_event_index_keeps_one_connection_and_shares_writes_across_processes(instance, dagster_home: Path) -> None:
    storage = instance.event_log_storage
    assert isinstance(storage, SharedIndexSqliteEventLogStorage)
    with storage.index_connection() as first:
        connection = first.connection.dbapi_connection
    with storage.index_connection() as second:
        assert second.connection.dbapi_connection is connection
    instance.add_dynamic_partitions("script", ["launch"])
    assert _in_another_process(dagster_home, "print(instance.get_dynamic_partitions('script'))") == "['launch']"
    _in_another_process(dagster_home, "instance.add_dynamic_partitions('avatar', ['anna'])")
    assert instance.get_dynamic_partitions("avatar") == ["anna"]


def test_steps_claiming_the_one_gpu_slot_at_once_hold_it_one_at_a_time(instance) -> None:
    # Four claimants, each with a storage of its own (its own connection and lock, as separate run processes
    # have), all asking at the same moment, 25 times over. With Dagster's SQLite storage as it comes, about one
    # hand-over in five let two of them hold the slot together.
    base_dir = instance.event_log_storage._base_dir
    holds: list[tuple[float, float]] = []
    never_claimed: list[str] = []
    all_ask = threading.Barrier(4)

    def claimant(index: int) -> None:
        storage = SharedIndexSqliteEventLogStorage(base_dir)
        for attempt in range(25):
            run_id = f"run-{index}-{attempt}"
            all_ask.wait()
            deadline = time.monotonic() + 30
            while not storage.claim_concurrency_slot(GPU_POOL, run_id, "lipsync_video").is_claimed:
                if time.monotonic() > deadline:  # queued but never given a free slot
                    never_claimed.append(run_id)
                    return
                time.sleep(0.002)
            start = time.time()
            time.sleep(0.003)
            holds.append((start, time.time()))
            storage.free_concurrency_slot_for_step(run_id, "lipsync_video")

    claimants = [threading.Thread(target=claimant, args=(index,)) for index in range(4)]
    for thread in claimants:
        thread.start()
    for thread in claimants:
        thread.join()
    assert never_claimed == []
    holds.sort()
    assert len(holds) == 100
    overlapping = [(a, b) for a, b in itertools.pairwise(holds) if b[0] < a[1]]
    assert overlapping == [], f"{len(overlapping)} of 99 hand-overs let two steps hold the one slot"


def test_processes_registering_the_same_new_files_at_once_all_succeed(instance) -> None:
    # The bucket sensor and `heygem run` both register files that just arrived. Four storages of their own add
    # the same three new keys at the same moment, 30 times over; Dagster's storage as it comes failed over half of
    # those 120 calls on the unique index.
    base_dir = instance.event_log_storage._base_dir
    failures: list[str] = []
    all_add = threading.Barrier(4)

    def registrar() -> None:
        storage = SharedIndexSqliteEventLogStorage(base_dir)
        for batch in range(30):
            all_add.wait()
            try:
                storage.add_dynamic_partitions("script", [f"voice-{batch}-{n}" for n in range(3)])
            except Exception as error:  # every failure counts, whatever it is
                failures.append(repr(error))

    registrars = [threading.Thread(target=registrar) for _ in range(4)]
    for thread in registrars:
        thread.start()
    for thread in registrars:
        thread.join()
    assert failures == []
    assert instance.get_dynamic_partitions("script") == [f"voice-{b}-{n}" for b in range(30) for n in range(3)]
    instance.add_dynamic_partitions("script", ["voice-0-0", "late", "late"])  # known keys kept, repeats once
    assert instance.get_dynamic_partitions("script")[-2:] == ["voice-29-2", "late"]


def _database_layout(path: Path) -> tuple:
    with sqlite3.connect(path) as db:
        return (sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()),
                db.execute("PRAGMA journal_mode").fetchall(), db.execute("SELECT * FROM alembic_version").fetchall())


def _no_hard_links(*args: object) -> None:
    raise PermissionError("this filesystem has no hard links")


def test_a_new_run_database_is_the_one_dagster_makes_and_an_existing_one_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dagster_storage = SqliteEventLogStorage(str(tmp_path / "dagster"))
    with dagster_storage.run_connection("run-a"):
        pass
    dagster_storage.dispose()
    expected = _database_layout(tmp_path / "dagster" / "run-a.db")
    assert expected[1] == [("wal",)] and len(expected[2]) == 1

    storage = SharedIndexSqliteEventLogStorage(str(tmp_path / "ours"))
    for run_id in ("run-a", "run-b"):  # both copies of the empty database the first one made
        with storage.run_connection(run_id):
            pass
    with monkeypatch.context() as patched:  # a filesystem without hard links: Dagster's own way
        patched.setattr(os, "link", _no_hard_links)
        with storage.run_connection("run-c"):
            pass
    for run_id in ("run-a", "run-b", "run-c"):
        assert _database_layout(tmp_path / "ours" / f"{run_id}.db") == expected
    assert not [name for name in os.listdir(tmp_path / "ours") if name.endswith(".new")]

    # A run database another process made first (here: with an event in it) is used, never replaced.
    other_process = SqliteEventLogStorage(str(tmp_path / "ours"))
    with other_process.run_connection("run-d") as connection:
        connection.exec_driver_sql("INSERT INTO event_logs (run_id, event) VALUES ('run-d', '{}')")
    other_process.dispose()
    with storage.run_connection("run-d") as connection:
        assert connection.exec_driver_sql("SELECT run_id FROM event_logs").fetchall() == [("run-d",)]
    storage.dispose()


def test_storage_folders_default_to_dagster_home_unless_given(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert FileComputeLogManager.from_config_value(None, {})._base_dir == str(tmp_path / "home" / "storage")
    monkeypatch.delenv("DAGSTER_HOME")
    given = FileComputeLogManager.from_config_value(None, {"base_dir": str(tmp_path / "logs")})
    assert given._base_dir == str(tmp_path / "logs")
    storage = SharedIndexSqliteEventLogStorage.from_config_value(None, {"base_dir": str(tmp_path / "events")})
    assert (tmp_path / "events" / "index.db").exists()
    storage.dispose()
    with pytest.raises(RuntimeError, match="DAGSTER_HOME is not set"):
        FileComputeLogManager.from_config_value(None, {})


# Run in a fresh interpreter: pytest's own capture replaces the streams whose file descriptors Dagster redirects.
CAPTURE = """
import json, os, subprocess, sys
from pathlib import Path
from heygem_pipeline.instance import init

def children():
    tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
    return {pid for task in tasks for pid in (task / "children").read_text().split()}

manager = init().compute_log_manager
log_key = ["some-run", "compute_logs", "abcdefgh"]
before = children()
with manager.capture_logs(log_key):
    print("from python", flush=True)
    os.write(2, b"from a native library\\n")  # what MediaPipe or ffmpeg write
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from a child process\\\\n')"], check=True)
    helpers = sorted(children() - before)  # Dagster's own manager starts tail and watcher processes here
data = manager.get_log_data(log_key)
print(json.dumps({"class": type(manager).__name__, "helpers": helpers, "complete": manager.is_capture_complete(log_key),
                  "stdout": data.stdout.decode(), "stderr": data.stderr.decode(),
                  "folder": manager.get_log_metadata(log_key).stdout_location}))
"""


def test_step_output_is_captured_to_files_without_helper_processes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", CAPTURE], env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
                            cwd=REPO, capture_output=True, text=True, check=True)
    captured = json.loads(result.stdout.strip().splitlines()[-1])
    assert captured["class"] == FileComputeLogManager.__name__
    assert captured["helpers"] == []
    assert captured["complete"]
    assert captured["stdout"] == "from python\n"
    assert captured["stderr"] == "from a native library\nfrom a child process\n"
    assert Path(captured["folder"]).is_relative_to(tmp_path / "storage")
