"""``heygem ui``: the Dagster webserver on the instance in ``$DAGSTER_HOME``, with the services its runs need (the
daemon, the broker, the workers: see ``services``) kept up for as long as it runs. ``heygem run`` started while the
UI is up uses the same services. ``heygem studio`` starts the same, then its page beside it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from heygem_pipeline.errors import HeygemError
from heygem_pipeline.instance.worker import die_with_parent
from heygem_pipeline.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBSERVER_START_SECONDS = 180.0


def webserver_answers(url: str) -> bool:
    """Whether a Dagster webserver serves ``url`` now."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def webserver(host: str = "127.0.0.1", port: int = 3000, wait: bool = False) -> Iterator[subprocess.Popen]:
    """The Dagster webserver (and the instance's services) for the duration of the block. ``wait``: return only
    once it answers (``HeygemError`` if it exits or does not answer in time)."""
    from heygem_pipeline.instance.services import session
    from heygem_pipeline.instance.setup import init

    home = Path(init().root_directory)
    # HEYGEM_AUTOMATION=0 starts the sensors stopped here too (the README's promise); the UI can turn them on.
    with session(home, REPO_ROOT / "workspace.yaml", automation=Settings.from_env().automation) as services:
        command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(services.workspace()), "-h",
                   host, "-p", str(port)]
        process = subprocess.Popen(command, env={**os.environ, "DAGSTER_HOME": str(home)}, preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + WEBSERVER_START_SECONDS
            while wait and not webserver_answers(f"http://{host}:{port}"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise HeygemError(f"the Dagster webserver did not start on {host}:{port} (exit status "
                                      f"{process.poll()}); is the port taken?")
                time.sleep(0.2)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_ui(host: str = "127.0.0.1", port: int = 3000) -> int:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with webserver(host, port) as process:
            print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']}); Ctrl-C stops it.",
                  file=sys.stderr, flush=True)
            try:
                return process.wait()
            except KeyboardInterrupt:
                return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
