"""Atomic outputs (temporary name, then rename) and clean-up of temporaries left by dead writers."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Temporaries are named ``.<stem>.<host>.<pid>.<random>.tmp<suffix>``: hidden (bucket scans skip them), and a
# later writer of the same destination can tell whether the writer of a leftover one is still alive.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TEMP_WRITER = re.compile(r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _default_is_alive(host: str, pid: int) -> bool:
    # Another machine's process cannot be checked from here: assume it is still writing.
    return host != _HOST or _pid_alive(pid)


def remove_stale_temporaries(dest: str | os.PathLike[str],
                             is_alive: Callable[[str, int], bool] | None = None) -> list[Path]:
    """Delete the temporaries that ``atomic_output`` writers of ``dest`` left behind when they were killed.

    A writer killed with SIGKILL (or by a power cut) cannot remove its temporary. Each temporary names its
    writer's host and pid; ``is_alive(host, pid)`` says whether that writer may still be writing (default: on
    this host, whether the pid exists; another host's writers are assumed alive). Returns what was removed.
    ``atomic_output`` calls this before each write, so a destination never collects more than one per live writer.
    """
    dest = Path(dest)
    prefix, suffix = f".{dest.stem[:40]}.", f".tmp{dest.suffix}"
    alive = is_alive or _default_is_alive
    removed: list[Path] = []
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            continue
        writer = _TEMP_WRITER.fullmatch(name[len(prefix): len(name) - len(suffix)])
        if writer is None or alive(writer["host"], int(writer["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` only if the block succeeds.

    Readers never see a half-written file, and a failure leaves any earlier ``dest`` untouched. Temporaries that
    killed writers of ``dest`` left behind are removed first (``remove_stale_temporaries``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem[:40]}.{_HOST}.{os.getpid()}.", suffix=f".tmp{dest.suffix}",
                                    dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes 0600 files; outputs are for others to read too, as any new file would be (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
