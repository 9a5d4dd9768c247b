"""How this project's Dagster instance keeps step logs and events: Dagster's local storage, minus two costs and
two races between processes.

Both classes are configured in ``dagster.yaml`` and imported only when Dagster loads the instance (the engine never
imports them). On these small jobs Dagster's own bookkeeping is a large share of a run, and two parts of it were
pure overhead:

- ``FileComputeLogManager``: Dagster's ``LocalComputeLogManager`` captures each step's stdout/stderr to files and
  also mirrors them back to the process's own streams, which costs four processes per run (``tail -F`` for each
  stream and a Python watcher for each tail: ~0.1 s of CPU a run, as much as a short check). Nobody reads that copy
  here: a run launched by the daemon has no terminal, and ``heygem run`` prints its own progress and failures. This
  manager writes the same files, in the same place and layout (the UI's stdout/stderr tabs read them as before),
  and mirrors nothing.
- ``SharedIndexSqliteEventLogStorage``: Dagster's ``SqliteEventLogStorage`` opens a new SQLAlchemy engine and
  connection for every access to its cross-run index database (partition lookups, asset records, pool slots,
  asset events): about a hundred a run. This storage keeps one connection to the index per process and uses it
  under the storage's own lock, exactly where Dagster would have opened a fresh one. Per-run event databases are
  written as Dagster writes them: the UI follows a running run by watching its file for changes, which needs each
  write to end its connection as Dagster's storage does. Two smaller costs go too: each new run's database is a
  copy of an empty one this process made once the Dagster way (creating it costs ~40 ms of CPU a run, mostly
  alembic loading its migration scripts again to stamp it), and the index's tables are looked up once, not before
  every asset event. Two more changes are for correctness, not cost: claims and releases of pool slots (``gpu``)
  run one at a time across every process of the instance, under a file lock (see ``_pool_lock``), and two
  processes registering the same new partition at once no longer make one of them fail.

Both default their folders to where Dagster's defaults put them in ``$DAGSTER_HOME`` (a yaml file cannot build
those paths itself).
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from dagster import Field, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log.schema import DynamicPartitionsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file
from dagster._utils.concurrency import ConcurrencyClaimStatus
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool


def _with_base_dir(config_value: Mapping[str, Any], *default: str) -> dict[str, Any]:
    """``config_value`` with ``base_dir`` defaulting to ``$DAGSTER_HOME/<default…>``."""
    config = dict(config_value)
    if "base_dir" not in config:
        home = os.environ.get("DAGSTER_HOME")
        if not home:
            raise RuntimeError("DAGSTER_HOME is not set: set it to the instance's folder, or give base_dir in "
                               "dagster.yaml")
        config["base_dir"] = os.path.join(home, *default)
    return config


class FileComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` without the mirroring of captured output back to the terminal.

    ``base_dir`` defaults to ``$DAGSTER_HOME/storage``, as for Dagster's default manager.
    """

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {**super().config_type(), "base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Mapping[str, Any]) -> FileComputeLogManager:
        # Dagster's parent class builds itself here, not ``cls``.
        return cls(inst_data=inst_data, **_with_base_dir(config_value, "storage"))

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        stdout_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        stderr_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(stdout_path)
        ensure_file(stderr_path)
        # File-descriptor level, like Dagster's own capture: output of ffmpeg and native libraries is kept too.
        with redirect_to_file(sys.stdout, stdout_path), redirect_to_file(sys.stderr, stderr_path):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # tells the UI the capture is complete


class SharedIndexSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one connection to the index database per process instead of one per access,
    new run databases copied from an empty one, the index's tables looked up once, pool slots claimed under a lock
    shared by every process, and dynamic partitions added without racing other processes.

    ``base_dir`` defaults to ``$DAGSTER_HOME/history/runs``, as for Dagster's default storage.
    """

    # The bytes of an empty run database, made once per process (Celery workers open a new instance for each run).
    _empty_run_db: bytes | None = None

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Set before Dagster's constructor, which reads the index already.
        self._index_engine: Engine | None = None
        self._index_pid = os.getpid()
        self._index_tables: set[str] = set()
        self._pool_lock_held = threading.local()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,  # type: ignore[override]
                          config_value: Mapping[str, Any]) -> SharedIndexSqliteEventLogStorage:
        # Dagster's parent class builds itself here, not ``cls``.
        return cls(inst_data=inst_data, **_with_base_dir(config_value, "history", "runs"))

    @contextmanager
    def index_connection(self) -> Iterator[Connection]:  # type: ignore[override]
        engine = self._shared_index_engine()
        # Under the lock Dagster's storage holds around each of its own connections.
        with self._db_lock, engine.connect() as connection, connection.begin():
            yield connection

    def _shared_index_engine(self) -> Engine:
        if self._index_engine is None or self._index_pid != os.getpid():  # a forked child gets its own
            with self._connect(INDEX_SHARD_NAME):  # Dagster's path once: creates or checks the database
                pass
            # One connection, used under the storage's lock by whichever thread holds it (the webserver's threads).
            self._index_engine = create_engine(self.conn_string_for_shard(INDEX_SHARD_NAME), poolclass=StaticPool,
                                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                             "check_same_thread": False})
            self._index_pid = os.getpid()
        return self._index_engine

    def has_table(self, table_name: str) -> bool:
        # Asked before index writes (asset event tags, check results); a table, once there, stays.
        if table_name not in self._index_tables:
            if not super().has_table(table_name):
                return False
            self._index_tables.add(table_name)
        return True

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        path = engine.url.database
        if (for_index_shard or not path or os.path.basename(path) == f"{INDEX_SHARD_NAME}.db"
                or os.path.exists(path) or not self._place_empty_run_db(path)):
            super()._initdb(engine, for_index_shard=for_index_shard)

    def _place_empty_run_db(self, path: str) -> bool:
        """Put a copy of an empty run database at ``path``; False when it could not (another process put one there
        first, a filesystem without hard links, a full disk): Dagster then creates or checks it its own way."""
        if self._empty_run_db is None:
            with tempfile.TemporaryDirectory(prefix="heygem-run-db-") as folder:
                empty = os.path.join(folder, "empty.db")
                engine = create_engine(f"sqlite:///{empty}", poolclass=NullPool)
                super()._initdb(engine)  # Dagster's own schema, journal mode and alembic stamp
                engine.dispose()
                if os.path.exists(f"{empty}-wal"):  # not all in the file (SQLite folds the log in on close)
                    return False
                with open(empty, "rb") as file:
                    type(self)._empty_run_db = file.read()
        # Written beside it, then linked into place: never a half-written database, never one replaced.
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.new"
        try:
            with open(temporary, "wb") as file:
                file.write(self._empty_run_db)
            os.link(temporary, path)
        except OSError:  # another process made it first, or a filesystem without hard links: Dagster's way then
            return False
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
        return True

    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> None:
        # Dagster reads which keys exist, then inserts the others: two processes adding the same new file at once
        # (the bucket sensor and ``heygem run``) collide on the index's unique key and one of them fails. One
        # statement that skips existing keys cannot collide.
        self._check_partitions_table()
        rows = [{"partitions_def_name": partitions_def_name, "partition": key} for key in dict.fromkeys(partition_keys)]
        if rows:
            with self.index_connection() as connection:
                connection.execute(DynamicPartitionsTable.insert().prefix_with("OR IGNORE"), rows)

    # Pool slots. Dagster's SQL storage claims a slot in steps (is a slot unassigned? then queue the step as
    # assigned; is a slot free? then take it), each in its own transaction. Postgres rows locked ``FOR UPDATE``
    # keep that safe; SQLite ignores the clause, so two processes claiming at once could both be assigned and both
    # take the one ``gpu`` slot, and a step queued while another freed the slot could wait unassigned with the slot
    # free. Each claim, release and change of slots runs whole under one lock shared by every process of the
    # instance instead.

    @contextmanager
    def _pool_lock(self) -> Iterator[None]:
        if getattr(self._pool_lock_held, "value", False):  # a release assigns pending steps: already held
            yield
            return
        # Opened for each use: flock belongs to the open file, so this process's threads exclude each other too;
        # the kernel lets go of it when a process dies holding it.
        with open(os.path.join(self._base_dir, "pools.lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            self._pool_lock_held.value = True
            try:
                yield
            finally:
                self._pool_lock_held.value = False

    def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str,
                               priority: int | None = None) -> ConcurrencyClaimStatus:
        with self._pool_lock():
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def free_concurrency_slots_for_run(self, run_id: str) -> None:
        with self._pool_lock():
            super().free_concurrency_slots_for_run(run_id)

    def free_concurrency_slot_for_step(self, run_id: str, step_key: str) -> None:
        with self._pool_lock():
            super().free_concurrency_slot_for_step(run_id, step_key)

    def assign_pending_steps(self, concurrency_keys: Sequence[str]) -> None:
        with self._pool_lock():
            super().assign_pending_steps(concurrency_keys)

    def set_concurrency_slots(self, concurrency_key: str, num: int) -> None:
        with self._pool_lock():
            super().set_concurrency_slots(concurrency_key, num)

    def delete_concurrency_limit(self, concurrency_key: str) -> None:
        with self._pool_lock():
            super().delete_concurrency_limit(concurrency_key)

    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        with self._pool_lock():
            return super().initialize_concurrency_limit_to_default(concurrency_key)

    def dispose(self) -> None:
        if self._index_engine is not None and self._index_pid == os.getpid():
            self._index_engine.dispose()
        self._index_engine = None
        super().dispose()
