"""``heygem ui``: the Dagster webserver on the instance in ``$DAGSTER_HOME``, with the services its runs need (the
daemon, the broker, the workers: see ``services``) kept up for as long as it runs. ``heygem run`` started while the
UI is up uses the same services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from heygem_pipeline.worker import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_ui(host: str = "127.0.0.1", port: int = 3000) -> int:
    from heygem_pipeline.instance import init
    from heygem_pipeline.services import session

    home = Path(init().root_directory)
    with session(home, REPO_ROOT / "workspace.yaml") as services:
        webserver = Path(sys.executable).with_name("dagster-webserver")
        command = [str(webserver), "-w", str(services.workspace()), "-h", host, "-p", str(port)]
        print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={home}); Ctrl-C stops it.", file=sys.stderr,
              flush=True)
        process = subprocess.Popen(command, env={**os.environ, "DAGSTER_HOME": str(home)}, preexec_fn=die_with_parent)

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            try:
                return process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
