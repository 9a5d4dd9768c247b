"""Safe ids from user file names.

Ids become partition keys, bucket paths and output file names, so they must be stable (same name, same id),
collision-free (two different names never share an id), and harmless (no path separators, no leading dots
or dashes that a tool could read as an option, no characters a shell or a URL would mangle).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePosixPath

from heygem_pipeline.errors import UnsafeNameError

MAX_ID_LENGTH = 64
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def stem_and_ext(name: str) -> tuple[str, str]:
    """Split a file name into (stem, lower-case extension without the dot)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return base, ""
    return stem, ext.lower()


def is_hidden(name: str) -> bool:
    """Hidden files (``.DS_Store``, ``._x.mp4``, ``.upload.part``) are never inputs."""
    return PurePosixPath(name.replace("\\", "/")).name.startswith(".")


def safe_id(name: str) -> str:
    """A stable, collision-free, shell- and path-safe id for a file name.

    The readable part is the ASCII-folded, lower-cased stem with every other run of characters turned into
    ``_``. When that loses information (anything was changed), an 8-hex digest of the original stem is
    appended so ``Anna Smith`` and ``anna_smith`` get different ids.
    """
    if is_hidden(name):
        raise UnsafeNameError(name, "hidden file names are not inputs", "rename it without the leading dot")
    stem, _ = stem_and_ext(name)
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii").lower()
    readable = _UNSAFE.sub("_", folded).strip("_-")
    if readable != stem or not readable:
        digest = hashlib.sha1(stem.encode("utf-8")).hexdigest()[:8]
        readable = f"{readable[: MAX_ID_LENGTH - 9]}_{digest}" if readable else f"id_{digest}"
    if not readable[0].isalnum():
        readable = f"id_{readable}"
    return readable[:MAX_ID_LENGTH]


def safe_id_or_none(name: str) -> str | None:
    """``safe_id(name)``, or None for a name that has no safe id."""
    try:
        return safe_id(name)
    except UnsafeNameError:
        return None
