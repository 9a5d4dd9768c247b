"""External tools under time limits: no ffmpeg, ffprobe or espeak-ng call can hang an item forever.

Two shapes of call:

- ``run_tool``: a command that runs to completion (ffprobe, ffmpeg writing a file or decoding to stdout,
  espeak-ng). It is killed when it shows no progress for ``ToolLimits.stall_seconds`` (ffmpeg's ``-progress``
  report stops advancing, or no bytes arrive on stdout) or when it runs past ``ToolLimits.total(media seconds)``.
- ``Watchdog``: a long-lived process whose pipes the caller drives frame by frame (``FrameReader``,
  ``FrameWriter``). A read or write on a pipe blocks in the kernel and cannot be interrupted from its own thread,
  so the watchdog's thread kills the process when one has been blocked for ``stall_seconds``; the blocked call
  then returns and the caller raises the watchdog's ``ToolTimeoutError`` instead of waiting forever.

Every process starts in its own session and is killed with its whole process group, so a wrapper script (or a
helper it started) cannot keep the pipes open after the kill. An exception in the caller (a cancelled run)
kills the process too: nothing keeps writing after its item is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ffmpeg

from heygem_pipeline.errors import ToolFailedError, ToolMissingError, ToolTimeoutError
from heygem_pipeline.settings import ToolLimits

PROGRESS_NONE, PROGRESS_STDOUT, PROGRESS_FFMPEG = "none", "stdout", "ffmpeg"
_STDERR_KEEP = 1 << 20  # bytes of stderr kept for error messages
_FIX = ("check that the file is complete and readable (a stalled network share or an endless stream?) and retry; "
        "the limits are HEYGEM_STALL_SECONDS and HEYGEM_TOOL_TIMEOUT_FACTOR")


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    def stderr_tail(self, lines: int = 3) -> str:
        """The last ``lines`` lines of stderr on one line, for error messages."""
        return " | ".join(self.stderr.decode(errors="replace").strip().splitlines()[-lines:])


def spawn(args: Sequence[str], **popen_options: Any) -> subprocess.Popen[bytes]:
    """Start a tool in its own session, so ``kill_tool`` can stop it together with anything it started."""
    return subprocess.Popen(list(args), start_new_session=True, **popen_options)


def kill_tool(process: subprocess.Popen[bytes]) -> None:
    """Kill a process started by ``spawn`` and whatever is left of its process group.

    Safe after the process has exited: a group id cannot be reused while the group has members, and a group
    without members raises ``ProcessLookupError``.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


def _tool_name(args: Sequence[str]) -> str:
    return Path(str(args[0])).name


class _Activity:
    """When a process last showed progress; updated by the pipe threads, read by the waiting thread."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


def _drain(stream: IO[bytes], sink: list[bytes], activity: _Activity | None, keep: int | None = None) -> None:
    """Read a pipe to its end into ``sink`` (only the last ``keep`` bytes, when given)."""
    kept = 0
    read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(65536)
        if not chunk:
            return
        if activity is not None:
            activity.touch()
        sink.append(chunk)
        kept += len(chunk)
        while keep is not None and kept > keep and len(sink) > 1:
            kept -= len(sink.pop(0))


def _watch_ffmpeg_progress(fd: int, activity: _Activity) -> None:
    """Parse ffmpeg's ``-progress`` key=value blocks; progress is an advance in frames, bytes or time written.

    ffmpeg repeats its report every half second even when nothing moves, so the values are compared, not the
    mere arrival of a report.
    """
    last: tuple[str, ...] | None = None
    block: dict[str, str] = {}
    with open(fd, "rb", closefd=True) as stream:
        for raw in stream:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            block[key] = value
            if key != "progress":
                continue
            state = tuple(block.get(name, "") for name in ("frame", "total_size", "out_time_us"))
            if state != last:
                activity.touch()
                last = state
            block = {}


def run_tool(args: Sequence[str], *, subject: str | os.PathLike[str], media_seconds: float | None = None,
             stdin: bytes | None = None, progress: str = PROGRESS_NONE,
             limits: ToolLimits | None = None) -> ToolResult:
    """Run ``args`` to completion under ``limits`` (default: from the environment); capture stdout and stderr.

    ``subject``: the file the command works on, named in the error. ``media_seconds``: the length of that media
    (None when unknown: only the stall limit, or for tools without progress the base limit, applies).
    ``progress``: how progress shows: ``"ffmpeg"`` (a ``-progress`` report is added to the command),
    ``"stdout"`` (bytes on stdout) or ``"none"`` (only the total limit). Raises ``ToolTimeoutError``.
    """
    if progress not in (PROGRESS_NONE, PROGRESS_STDOUT, PROGRESS_FFMPEG):
        raise ValueError(f"unknown progress kind {progress!r}")
    limits = limits or ToolLimits.from_env()
    args = [str(a) for a in args]
    tool = _tool_name(args)
    activity = _Activity()
    pass_fds: tuple[int, ...] = ()
    progress_read = progress_write = -1
    if progress == PROGRESS_FFMPEG:
        progress_read, progress_write = os.pipe()
        args[1:1] = ["-progress", f"pipe:{progress_write}"]
        pass_fds = (progress_write,)
    out: list[bytes] = []
    err: list[bytes] = []
    threads: list[threading.Thread] = []
    started = time.monotonic()
    try:
        process = spawn(args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds)
    finally:
        if progress_write >= 0:
            os.close(progress_write)  # the child has its copy; ours would keep the pipe from ever ending
    problem = ""
    try:
        stdout_activity = activity if progress == PROGRESS_STDOUT else None
        threads = [threading.Thread(target=_drain, args=(process.stdout, out, stdout_activity), daemon=True),
                   threading.Thread(target=_drain, args=(process.stderr, err, None, _STDERR_KEEP), daemon=True)]
        if progress_read >= 0:
            threads.append(threading.Thread(target=_watch_ffmpeg_progress, args=(progress_read, activity),
                                            daemon=True))
            progress_read = -1  # the thread owns it now
        if stdin is not None:
            threads.append(threading.Thread(target=_feed, args=(process, stdin), daemon=True))
        for thread in threads:
            thread.start()
        total = limits.total(media_seconds)
        while True:
            try:
                process.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if progress != PROGRESS_NONE and now - activity.last > limits.stall_seconds:
                problem = f"made no progress for {limits.stall_seconds:g} s"
            elif now - started > total:
                length = f" for {media_seconds:.1f} s of media" if media_seconds else ""
                problem = f"ran longer than its limit of {total:.0f} s{length}"
            if problem:
                break
    finally:
        kill_tool(process)  # on a limit, and on any exception here (a cancelled run): never leave it running
        process.wait()
        if progress_read >= 0:
            os.close(progress_read)
        for thread in threads:
            thread.join(timeout=5)
    if problem:
        raise ToolTimeoutError(subject, tool, problem, _FIX)
    return ToolResult(process.returncode, b"".join(out), b"".join(err))


def _feed(process: subprocess.Popen[bytes], data: bytes) -> None:
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError):
        process.stdin.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        process.stdin.close()


class Watchdog:
    """Kills a streaming tool whose pipe read or write has been blocked for ``stall_seconds``.

    The caller wraps each blocking pipe operation in ``with watchdog.blocking():``; time spent elsewhere (a slow
    consumer, a slow renderer) never counts. After a kill, ``error`` holds the ``ToolTimeoutError`` to raise.
    """

    def __init__(self, process: subprocess.Popen[bytes], *, subject: str | os.PathLike[str], tool: str = "ffmpeg",
                 limits: ToolLimits | None = None) -> None:
        self.process = process
        self.subject = str(subject)
        self.tool = tool
        self.limits = limits or ToolLimits.from_env()
        self.error: ToolTimeoutError | None = None
        self._since: float | None = None
        self._what = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{tool}-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def blocking(self, what: str = "") -> Iterator[None]:
        """Mark a pipe operation (or a wait) that may block; ``what`` ends up in the error message."""
        self._what = what
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self) -> None:
        stall = self.limits.stall_seconds
        poll = min(0.1, stall / 10)
        while not self._stop.wait(poll):
            since = self._since
            if since is not None and time.monotonic() - since > stall:
                what = f" ({self._what})" if self._what else ""
                self.error = ToolTimeoutError(self.subject, self.tool, f"made no progress for {stall:g} s{what}",
                                              _FIX)
                kill_tool(self.process)
                return

    def check(self) -> None:
        """Raise the watchdog's error, if it killed the process."""
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# Every ffmpeg call shares these: quiet unless something fails, never read stdin.
FFMPEG_GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-loglevel", "error")


def require_tool(name: str) -> str:
    """Path of a system tool, or a clear error saying how to install it."""
    found = shutil.which(name)
    if not found:
        package = "espeak-ng" if name.startswith("espeak") else "ffmpeg"
        raise ToolMissingError(f"{name} is not installed; install it with: apt-get install {package}")
    return found


def ff_path(path: str | os.PathLike[str]) -> str:
    """An absolute ``file:`` URL for ffmpeg, immune to option and protocol parsing."""
    return "file:" + os.path.abspath(os.fspath(path))


def run_ffmpeg(stream: ffmpeg.nodes.OutputStream, what: str, *, subject: str | os.PathLike[str] | None = None,
               media_seconds: float | None = None, limits: ToolLimits | None = None) -> None:
    """Run a built ffmpeg graph; on failure raise ``ToolFailedError`` with the command's last stderr lines.

    Killed (``ToolTimeoutError`` naming ``subject``, default ``what``) when its progress report stops advancing
    for ``HEYGEM_STALL_SECONDS`` or it runs past the limit for ``media_seconds`` of media.
    """
    require_tool("ffmpeg")
    args = stream.global_args(*FFMPEG_GLOBAL_ARGS).compile()
    result = run_tool(args, subject=subject if subject is not None else what, media_seconds=media_seconds,
                      progress=PROGRESS_FFMPEG, limits=limits)
    if result.returncode != 0:
        raise ToolFailedError("ffmpeg", subject if subject is not None else what, result.returncode,
                              result.stderr_tail(), doing=what)
