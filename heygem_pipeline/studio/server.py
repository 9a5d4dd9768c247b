"""``heygem studio``: the page on its own port, beside the Dagster webserver whose GraphQL API it submits to.

It starts what ``heygem ui`` starts (or uses the webserver already answering at ``--dagster-url``), so one command
brings the whole product up on one machine. Safe by default: it binds 127.0.0.1; any other address needs a login
(``--auth``) or an explicit ``--no-auth``; no share links, no analytics; the only files it serves are the bucket's
videos and deliverables and the page's own uploads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from heygem_pipeline.errors import HeygemError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_MAX_UPLOAD = "2gb"


class StudioConfigError(HeygemError):
    """The studio was asked to start in a way that is not safe or not possible (the message says what to do)."""


@dataclass(frozen=True)
class StudioSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[tuple[str, str], ...] = ()
    no_auth: bool = False
    bucket: str = "data/bucket"
    dagster_url: str = ""  # a webserver already running; default: start one on dagster_port
    dagster_port: int = 3000
    max_upload: str = DEFAULT_MAX_UPLOAD
    voices: str = ""  # the folder of voices to pick for text ("": $HEYGEM_VOICES_DIR or the default folder)

    def check(self) -> None:
        """Refuse to serve the network without a login, unless told so explicitly."""
        if self.host not in LOCAL_HOSTS and not self.auth and not self.no_auth:
            raise StudioConfigError(f"--host {self.host} makes the studio reachable from the network, and it has no "
                                    "login: add --auth user:password (or --auth-file FILE), or --no-auth if this "
                                    "network is trusted")


def read_auth(pairs: list[str], auth_file: str | None) -> tuple[tuple[str, str], ...]:
    """``user:password`` pairs from the command line and from a file (one a line, # comments)."""
    lines = list(pairs)
    if auth_file:
        try:
            text = Path(auth_file).expanduser().read_text()
        except OSError as error:
            raise StudioConfigError(f"{auth_file}: cannot read the login file ({error.strerror})") from error
        lines += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    logins = []
    for line in lines:
        user, colon, password = line.partition(":")
        if not colon or not user or not password:
            raise StudioConfigError(f"login {user or line!r}: write it as user:password")
        logins.append((user, password))
    return tuple(logins)


def served_folders(bucket_url: str, home: Path) -> list[Path]:
    """The folders the page may serve files from: the bucket's outputs and renders (local buckets)."""
    from heygem_pipeline.factory.bucket import Bucket
    from heygem_pipeline.factory.layout import OUTPUTS_PREFIX

    bucket = Bucket(bucket_url)
    if not bucket.is_local:
        return []
    folders = [bucket.local_path(OUTPUTS_PREFIX), bucket.local_path(bucket.work("renders"))]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def launch(settings: StudioSettings, dagster_url: str, home: Path, block: bool = True):
    """Serve the page (``block=False``: return the running app, for tests and benchmarks)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Uploads land beside the instance (one file system with a local bucket: moved in by a link, not a copy).
    uploads = home / "studio" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    import gradio as gr

    from heygem_pipeline.api import FactoryClient
    from heygem_pipeline.engine.audio.voices.catalog import default_voices_folder
    from heygem_pipeline.factory.bucket import Bucket
    from heygem_pipeline.settings import Settings
    from heygem_pipeline.studio.app import build
    from heygem_pipeline.studio.handlers import Studio

    folders = served_folders(settings.bucket, home)
    gr.set_static_paths([str(f) for f in folders])
    factory = Settings.from_env()
    # The engines whose weights the factory has: a campaign picking another would fail every pair.
    engines = ("viseme", *(("wav2lip",) if factory.wav2lip_checkpoint else ()),
               *(("musetalk",) if factory.musetalk_models else ()))
    voices = Path(settings.voices).expanduser() if settings.voices else default_voices_folder()
    studio = Studio(Bucket(settings.bucket), FactoryClient(dagster_url), engines, voices)
    page = build(studio)
    page.queue(default_concurrency_limit=8)
    print(f"HeyGem Studio on http://{settings.host}:{settings.port} (factory {dagster_url}, bucket "
          f"{settings.bucket}, voices {voices}: {len(studio.voices()) - 1} found); Ctrl-C stops it.",
          file=sys.stderr, flush=True)
    try:
        page.launch(server_name=settings.host, server_port=settings.port, share=False, inbrowser=False,
                    auth=list(settings.auth) or None, max_file_size=settings.max_upload, allowed_paths=[],
                    blocked_paths=[], enable_monitoring=False, footer_links=[], ssr_mode=False, quiet=True,
                    prevent_thread_lock=not block, show_error=True)
    except OSError as error:
        raise StudioConfigError(f"cannot serve on {settings.host}:{settings.port} ({error}); choose another "
                                "--port") from error
    return page


def start_studio(settings: StudioSettings) -> int:
    """``heygem studio``: the factory's webserver and services (unless one answers), then the page, until Ctrl-C."""
    from heygem_pipeline.instance.ui import webserver, webserver_answers

    settings.check()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and a service manager's stop both end the page, then what it started. SIGINT is set explicitly: a
    # process started with it ignored (a background job of a script) would otherwise never see Ctrl-C's stop.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.ExitStack() as stack:
            url = settings.dagster_url or f"http://127.0.0.1:{settings.dagster_port}"
            if not webserver_answers(url):
                if settings.dagster_url:
                    raise StudioConfigError(f"no Dagster webserver answers at {settings.dagster_url}: start `heygem "
                                            "ui` there, or leave out --dagster-url to start one here")
                stack.enter_context(webserver("127.0.0.1", settings.dagster_port, wait=True))
            home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve()
            with contextlib.suppress(KeyboardInterrupt):
                launch(settings, url, home)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
