"""espeak-ng as a voice: the program (GPL, never imported) turns a text into a WAV offline, nothing to download."""

from __future__ import annotations

import os
from pathlib import Path

from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.tools import require_tool, run_tool
from heygem_pipeline.errors import ToolFailedError
from heygem_pipeline.settings import DEFAULT_VOICE, ToolLimits


def synthesize_speech(text: str, dest_wav: str | os.PathLike[str], voice: str = DEFAULT_VOICE, *,
                      subject: str | os.PathLike[str] | None = None, limits: ToolLimits | None = None) -> Path:
    """Voice ``text`` offline with espeak-ng into ``dest_wav`` (22.05 kHz mono 16-bit), written atomically.

    The text goes through stdin, so nothing in it can be read as an option or by a shell. ``subject``: the file
    the text came from, named if espeak-ng has to be stopped (default ``dest_wav``).
    """
    if not text.strip():
        raise ValueError("no text to synthesize")
    espeak = require_tool("espeak-ng")
    dest = Path(dest_wav)
    with atomic_output(dest) as tmp:
        # -b 1: the input is UTF-8. The output path is absolute, so it cannot start with a dash.
        command = [espeak, "-b", "1", "-v", voice, "-w", str(tmp.resolve()), "--stdin"]
        # espeak-ng reports no progress: its limit scales with the speech's expected length (~12 characters a
        # second; espeak-ng itself runs ~100x faster than real time).
        result = run_tool(command, subject=subject or dest, media_seconds=len(text) / 12.0, stdin=text.encode("utf-8"),
                          limits=limits)
        if result.returncode != 0 or tmp.stat().st_size <= 44:
            raise ToolFailedError("espeak-ng", subject or dest, result.returncode, result.stderr_tail(),
                                  doing=f"voicing the text with voice {voice!r}",
                                  fix="list the installed voices with: espeak-ng --voices")
    return dest
