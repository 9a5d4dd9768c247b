"""The processes a Dagster instance needs to run work on this machine, started when a command needs them and
stopped when none does.

The embedded default (the instance's Celery run launcher has no broker of its own) needs: Redis on a unix socket
(Celery's broker and result backend), one code server that serves the definitions to the daemon, the webserver and
clients, the daemon (run queue, run monitoring and retries, sensors, schedules), and two Celery workers: queue
``gpu`` (renders, one at a time) and queue ``cpu`` (intake, checks, deliverables). A small supervisor process owns
them, with everything under ``$DAGSTER_HOME/run/``. Every client (``heygem run``, ``heygem ui``) holds a shared
lock on ``run/clients.lock`` while it needs them; once the last one lets go (it finished, was interrupted, or was
killed: the kernel drops a dead process's locks), the supervisor stops the services and exits. Its children die
with it (Linux's parent-death signal), so killing the supervisor leaves nothing behind either.

An instance configured with its own broker (README, Scaling out) runs its daemon and workers itself: clients then
only check that a daemon is alive.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from heygem_pipeline.errors import HeygemError
from heygem_pipeline.instance.setup import is_created
from heygem_pipeline.instance.worker import die_with_parent

LOCATION_NAME = "heygem_pipeline.definitions"  # the name workspace.yaml's python_module entry gets too
READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.2
MAX_RESTARTS = 3  # per service, before the supervisor gives up and stops everything


class ServicesError(HeygemError):
    """The embedded services could not be started (the message names the log to read)."""


@dataclass(frozen=True)
class RunDir:
    """``$DAGSTER_HOME/run``: sockets, locks, state, logs and the workspace file of the embedded services."""

    home: Path

    @property
    def path(self) -> Path:
        return self.home / "run"

    def __getattr__(self, name: str) -> Path:
        files = {"redis_socket": "redis.sock", "code_socket": "code.sock", "workspace": "workspace.yaml",
                 "state": "state.json", "clients_lock": "clients.lock", "supervisor_lock": "supervisor.lock",
                 "start_lock": "start.lock", "logs": "logs"}
        if name in files:
            return self.path / files[name]
        raise AttributeError(name)

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"


def _lock(path: Path, mode: int) -> int | None:
    """An open descriptor holding ``flock(mode)`` on ``path``, or None when ``mode`` is non-blocking and taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def supervisor_alive(run: RunDir) -> bool:
    fd = _lock(run.supervisor_lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    if fd is None:
        return True
    _unlock(fd)
    return False


def read_state(run: RunDir) -> dict:
    try:
        return json.loads(run.state.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(run: RunDir, **state: object) -> None:
    temporary = run.state.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2))
    os.replace(temporary, run.state)


def _socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ------------------------------------------------------------------------------------------------ supervisor


@dataclass
class Service:
    name: str
    command: list[str]
    ready_socket: Path | None = None  # the service is up once this socket accepts connections
    needs: tuple[str, ...] = ()  # services that must be up before this one starts
    stop_seconds: float = 5.0  # how long it may take to stop before it is killed
    niceness: int = 0
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    restarts: int = 0

    def start(self, run: RunDir) -> None:
        log = open(run.log(self.name), "ab")  # noqa: SIM115 - the child keeps it
        niceness = self.niceness

        def child_setup() -> None:
            die_with_parent()
            if niceness:
                os.nice(niceness)

        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        env={**os.environ, **self.env}, preexec_fn=child_setup)
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self, since: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, since + self.stop_seconds - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{self.name} did not stop in time: killed", flush=True)
            self.process.kill()
            self.process.wait()


def embedded_services(run: RunDir) -> list[Service]:
    """Redis, the code server, one worker per queue and the daemon, in start order."""
    python = sys.executable
    bin_dir = Path(python).parent
    # The render (the critical path) lets its ffmpeg use every core; the CPU worker's runs fill the gaps beside it
    # at a lower priority, one ffmpeg thread each (less CPU for the same pictures), unless the user set it.
    single_thread = {"HEYGEM_FFMPEG_THREADS": os.environ.get("HEYGEM_FFMPEG_THREADS") or "1"}
    redis = Service("redis", ["redis-server", "--port", "0", "--unixsocket", str(run.redis_socket),
                              "--unixsocketperm", "700", "--dir", str(run.path), "--save", "", "--appendonly", "no"],
                    ready_socket=run.redis_socket)
    # Stateless: it may be killed soon (a graceful gRPC stop waits for its clients' channels to close).
    code = Service("code-server", [str(bin_dir / "dagster"), "api", "grpc", "--module-name", LOCATION_NAME,
                                   "--location-name", LOCATION_NAME, "--socket", str(run.code_socket),
                                   "--log-level", "warning"], ready_socket=run.code_socket, stop_seconds=0.5)
    daemon = Service("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(run.workspace),
                                "--log-level", "warning"], needs=("redis", "code-server"))
    limits = queue_limits(run.home)

    def worker(queue: str, concurrency: int, niceness: int = 0, env: dict[str, str] | None = None) -> Service:
        # A worker finishes the run in hand (a warm shutdown) if that is quick; a run killed past that is failed
        # and retried by Dagster when the services next start.
        return Service(f"worker-{queue}", [python, "-m", "heygem_pipeline.cli", "worker", "--queues", queue,
                                           "--concurrency", str(concurrency), "--name", f"{queue}@%h"],
                       needs=("redis",), stop_seconds=STOP_TIMEOUT_SECONDS, niceness=niceness, env=env or {})

    # One render at a time (one GPU, or the CPU's cores for the viseme engine); the CPU worker takes as many runs
    # as dagster.yaml lets the run queue hand it.
    return [redis, code, worker("gpu", 1), worker("cpu", limits.get("cpu", 1), 10, single_thread), daemon]


def _workspace_yaml(run: RunDir) -> str:
    return (f"load_from:\n  - grpc_server:\n      socket: {json.dumps(str(run.code_socket))}\n"
            f"      location_name: {LOCATION_NAME}\n")


def _wait_socket(service: Service, run: RunDir, deadline: float) -> None:
    assert service.ready_socket is not None and service.process is not None
    while not _socket_answers(service.ready_socket):
        if service.process.poll() is not None:
            raise ServicesError(f"{service.name} exited with status {service.process.returncode}: "
                                f"{_log_tail(run.log(service.name))} (log: {run.log(service.name)})")
        if time.monotonic() > deadline:
            raise ServicesError(f"{service.name} did not start within {READY_TIMEOUT_SECONDS:.0f} s "
                                f"(log: {run.log(service.name)})")
        time.sleep(0.05)


def supervise(home: Path) -> int:
    """The supervisor's life: start the services, keep them up while clients hold the lock, then stop them."""
    run = RunDir(home)
    held = _lock(run.supervisor_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if held is None:
        return 0  # another supervisor owns this instance's services
    # Ctrl-C in the terminal of the command that started it must not stop the services under other clients.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    services = embedded_services(run)
    _write_state(run, pid=os.getpid(), ready=False, error="")
    try:
        for stale in (run.redis_socket, run.code_socket):
            stale.unlink(missing_ok=True)
        run.workspace.write_text(_workspace_yaml(run))
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        # The workers import the definitions themselves: they start beside the code server, not after it.
        by_name = {service.name: service for service in services}
        for service in services:
            for needed in service.needs:
                _wait_socket(by_name[needed], run, deadline)
            service.start(run)
        for service in services:
            if service.ready_socket is not None:
                _wait_socket(service, run, deadline)
        _write_state(run, pid=os.getpid(), ready=True, error="", workspace=str(run.workspace),
                     services={s.name: s.process.pid for s in services if s.process})
        _watch(run, services)
    except ServicesError as error:
        _write_state(run, pid=os.getpid(), ready=False, error=str(error))
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(run, services)
        _unlock(held)
    return 0


def _watch(run: RunDir, services: list[Service]) -> None:
    """Until no client holds the clients lock: restart a service that died (a killed worker comes back)."""
    while True:
        time.sleep(POLL_SECONDS)
        no_clients = _lock(run.clients_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if no_clients is not None:
            # Kept until the services are down: a client arriving now waits, then starts a new supervisor.
            _write_state(run, pid=os.getpid(), ready=False, stopping=True, error="")
            return
        for service in services:
            assert service.process is not None
            if service.process.poll() is None:
                continue
            if service.restarts >= MAX_RESTARTS:
                raise ServicesError(f"{service.name} keeps exiting: {_log_tail(run.log(service.name))} "
                                    f"(log: {run.log(service.name)})")
            service.restarts += 1
            service.start(run)


def _stop_all(run: RunDir, services: list[Service]) -> None:
    # Workers and the daemon first (they talk to Redis and the code server), then the rest.
    for group in (services[2:], services[:2]):
        for service in reversed(group):
            service.stop()
        since = time.monotonic()
        for service in group:
            service.wait_stopped(since)
    for stale in (run.redis_socket, run.code_socket):
        stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- clients


def instance_config(home: Path) -> dict:
    try:
        return yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    except FileNotFoundError:
        return {}


def is_embedded(home: Path) -> bool:
    """Whether the instance launches runs onto the embedded broker (the services here start its workers): its
    run launcher is this project's Celery launcher without a broker of its own."""
    launcher = instance_config(home).get("run_launcher") or {}
    return (launcher.get("module") in ("heygem_pipeline.run_launcher", "heygem_pipeline.instance.run_launcher")
            and not (launcher.get("config") or {}).get("broker"))


def queue_limits(home: Path) -> dict[str, int]:
    """Runs at once per Celery queue, from dagster.yaml's run queue limits (the embedded CPU worker takes as many
    at once)."""
    limits = ((instance_config(home).get("concurrency") or {}).get("runs") or {}).get("tag_concurrency_limits") or []
    return {str(limit["value"]): int(limit["limit"]) for limit in limits
            if limit.get("key") == "dagster-celery/queue" and "value" in limit}


@dataclass
class Services:
    """A client's hold on the services: ``workspace()`` waits until runs can be created."""

    run: RunDir | None  # None: an instance with its own daemon and workers
    repo_workspace: Path

    @property
    def embedded(self) -> bool:
        return self.run is not None

    def workspace(self) -> Path:
        """The workspace file runs are created from, once the services are ready."""
        if self.run is None:
            return self.repo_workspace
        _wait_ready(self.run)
        return self.run.workspace

    def check(self) -> None:
        """Raise ``ServicesError`` when the services stopped under this client (its runs would wait for ever)."""
        if self.run is None:
            return
        state = read_state(self.run)
        if state.get("error"):
            raise ServicesError(str(state["error"]))
        if not supervisor_alive(self.run):
            raise ServicesError(f"the services stopped: {_log_tail(self.run.log('supervisor'))} (logs in "
                                f"{self.run.logs})")


@contextlib.contextmanager
def session(home: Path, repo_workspace: Path, automation: bool = True) -> Iterator[Services]:
    """Hold the instance's services for the duration of the block, starting them (in the background: the block
    goes on at once) if nobody runs them yet. An instance with its own broker starts nothing here.

    ``automation``: whether services started here run the bucket sensor and the nightly schedule (their default
    status; services already running keep theirs)."""
    if not is_embedded(home):
        yield Services(None, repo_workspace)
        return
    run = RunDir(home)
    run.logs.mkdir(parents=True, exist_ok=True)
    if not is_created(home):  # its daemon, workers and clients would all race to create the same schema
        from heygem_pipeline.instance.setup import init

        init(home)
    client = _lock(run.clients_lock, fcntl.LOCK_SH)  # waits while a supervisor is stopping (it holds LOCK_EX)
    assert client is not None
    try:
        start = _lock(run.start_lock, fcntl.LOCK_EX)
        assert start is not None
        try:
            if not supervisor_alive(run):
                run.state.unlink(missing_ok=True)
                with open(run.log("supervisor"), "ab") as log:
                    supervise = [sys.executable, "-m", "heygem_pipeline.instance.services", "supervise", str(home)]
                    subprocess.Popen(supervise,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                     env={**os.environ, "DAGSTER_HOME": str(home),
                                          "HEYGEM_AUTOMATION": "on" if automation else "off"})
        finally:
            _unlock(start)
        yield Services(run, repo_workspace)
    finally:
        _unlock(client)
        _wait_stopped_if_last(run)


def _wait_ready(run: RunDir) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    started = time.monotonic()
    while True:
        state = read_state(run)
        if state.get("ready"):
            return
        if state.get("error"):
            raise ServicesError(str(state["error"]))
        # The supervisor takes its lock first thing; give it a moment to exist before concluding it died.
        if time.monotonic() - started > 10 and not supervisor_alive(run):
            raise ServicesError(f"the services' supervisor stopped: {_log_tail(run.log('supervisor'))} "
                                f"(logs in {run.logs})")
        if time.monotonic() > deadline:
            raise ServicesError(f"the services did not start within {READY_TIMEOUT_SECONDS:.0f} s (logs in "
                                f"{run.logs})")
        time.sleep(0.05)


def _wait_stopped_if_last(run: RunDir) -> None:
    """When no other client needs the services, wait until the supervisor has stopped them: nothing a command
    started outlives it."""
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS * 3
    while supervisor_alive(run) and time.monotonic() < deadline:
        if not read_state(run).get("stopping"):
            probe = _lock(run.clients_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if probe is None:
                return  # another client holds them
            _unlock(probe)
        time.sleep(POLL_SECONDS / 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heygem_pipeline.instance.services")
    parser.add_argument("command", choices=("supervise",))
    parser.add_argument("home", type=Path)
    args = parser.parse_args(argv)
    return supervise(args.home.resolve())


if __name__ == "__main__":
    sys.exit(main())
