"""The upgrade fixture (tests/data/upgrade-08acc0d/, see its README.md): a bucket and a Dagster instance as commit
08acc0d's `heygem run` left them. Used by test_upgrade and test_setting_scope."""

from __future__ import annotations

import json
import os
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "upgrade-08acc0d"


def restore_mtimes(bucket: Path) -> None:
    """The fixture's files' modification times as the old code left them (a user's upgrade keeps them)."""
    for rel, ns in json.loads((FIXTURE / "mtimes.json").read_text()).items():
        os.utime(bucket / rel, ns=(ns, ns))
    # Each upload's stamp holds "<size>:<mtime>" of the upload as the old code saw it: if this file system cannot
    # hold those times, stale stamps would say nothing about the upgrade.
    for upload, stamp in (("scripts/hello.wav", "work/scripts/hello/stamp.json"),
                          ("avatars/studio.mp4", "work/avatars/studio/video.stamp.json")):
        info = os.stat(bucket / upload)
        token = json.loads((bucket / stamp).read_text())["token"]
        assert token.startswith(f"{info.st_size}:{info.st_mtime}|"), (
            f"the fixture's copy in {bucket} does not have the old mtimes (this file system's precision?): "
            f"{upload} is {info.st_size}:{info.st_mtime}, its stamp says {token}")
