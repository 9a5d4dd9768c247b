"""The voices a user can pick for text scripts: the built-in espeak-ng voice, and what lies in a voices folder.

A folder (``heygem studio --voices DIR``; default ``$HEYGEM_VOICES_DIR``, else ``~/.local/share/heygem/voices``) is
searched a few levels deep, hidden files and folders left out:

- a Piper voice is ``<name>.onnx`` with ``<name>.onnx.json`` beside it: one entry;
- a Kokoro voice is an ``.onnx`` without a json, with a voices file (``voices*.bin`` or ``*.npz``) in the same
  folder: one entry per speaker in the voices file (its array names, read from the zip's list of files: neither the
  tables nor the ONNX model are loaded).

A missing folder only means the built-in voice. Each entry knows the campaign file's ``voice:`` to write for it
(nothing for the built-in voice: the factory's default speaks, as in a campaign without ``voice:``). Entries are
found again by ``key``, which names files by their place in the folder, never by an absolute path: a page sends a
key back, and only a key of the folder's own voices is accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.engine.audio.voices.kokoro import read_speakers
from heygem_pipeline.engine.audio.voices.piper import config_path_of
from heygem_pipeline.errors import VoiceModelError

VOICES_DIR_VARIABLE = "HEYGEM_VOICES_DIR"
DEFAULT_VOICES_DIR = "~/.local/share/heygem/voices"
BUILTIN_KEY = "builtin"
BUILTIN_LABEL = "Default voice"  # the factory's: espeak-ng unless HEYGEM_VOICE_MODEL is set
MAX_DEPTH = 5  # Piper's own download layout is en/en_US/lessac/medium/<voice>.onnx
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceEntry:
    """One voice to pick: ``key`` (stable, for a page's value), ``label`` (shown) and the voice itself (None: the
    built-in default)."""

    key: str
    label: str
    choice: PiperChoice | KokoroChoice | None = None

    def campaign_voice(self) -> dict[str, Any] | None:
        """The campaign file's ``voice:`` mapping for this voice (None: write no ``voice:``)."""
        return campaign_voice(self.choice)


def campaign_voice(choice: EspeakChoice | PiperChoice | KokoroChoice | None) -> dict[str, Any] | None:
    """A campaign file's ``voice:`` mapping for ``choice``: its engine, then what differs from the defaults (None
    for None: no ``voice:``)."""
    if choice is None:
        return None
    return {"engine": choice.engine, **choice.model_dump(mode="json", exclude_defaults=True, exclude={"engine"})}


BUILTIN = VoiceEntry(BUILTIN_KEY, BUILTIN_LABEL)


def default_voices_folder() -> Path:
    """``$HEYGEM_VOICES_DIR``, else ``~/.local/share/heygem/voices``."""
    return Path(os.environ.get(VOICES_DIR_VARIABLE, "").strip() or DEFAULT_VOICES_DIR).expanduser()


def _files(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """Each folder under ``folder`` (at most ``MAX_DEPTH`` deep, hidden ones left out) with its visible files."""
    for here, folders, files in os.walk(folder, onerror=lambda error: _log.warning("voices folder: %s", error)):
        depth = len(Path(here).relative_to(folder).parts)
        folders[:] = sorted(f for f in folders if not f.startswith(".")) if depth < MAX_DEPTH else []
        yield Path(here), sorted(f for f in files if not f.startswith("."))


def _is_voices_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".npz") or (lower.startswith("voices") and lower.endswith(".bin"))


def _stem(name: str) -> str:
    return name[: -len(".onnx")] if name.lower().endswith(".onnx") else name


def voice_catalog(folder: str | os.PathLike[str] | None) -> list[VoiceEntry]:
    """The built-in voice first, then the folder's Piper voices, then its Kokoro speakers (each by name). A voices
    file that cannot be read is left out with a warning in the log; so is an ``.onnx`` that is neither."""
    entries = [BUILTIN]
    if folder is None:
        return entries
    root = Path(folder).expanduser()
    if not root.is_dir():
        return entries
    piper: list[VoiceEntry] = []
    kokoro: list[VoiceEntry] = []
    for here, names in _files(root):
        models = [n for n in names if n.lower().endswith(".onnx")]
        voices_files = [n for n in names if _is_voices_file(n)]
        for name in models:
            model = (here / name).resolve()
            rel = (here / name).relative_to(root).as_posix()
            if config_path_of(here / name).is_file():
                piper.append(VoiceEntry(f"piper:{rel}", f"Piper · {_stem(name)}", PiperChoice(model=str(model))))
                continue
            if not voices_files:
                _log.info("voices folder: %s has neither a .onnx.json (Piper) nor a voices file (Kokoro)", rel)
                continue
            for voices_name in voices_files:
                try:
                    speakers = read_speakers(here / voices_name)
                except VoiceModelError as error:
                    _log.warning("voices folder: %s", error)
                    continue
                voices = (here / voices_name).resolve()
                rel_voices = (here / voices_name).relative_to(root).as_posix()
                kokoro += [VoiceEntry(f"kokoro:{rel}:{rel_voices}:{speaker}", f"Kokoro · {speaker}",
                                      KokoroChoice(model=str(model), voices=str(voices), speaker=speaker))
                           for speaker in speakers]
    kokoro_models = {entry.choice.model for entry in kokoro if entry.choice is not None}
    if len(kokoro_models) > 1:  # several Kokoro models (full and int8): say which
        kokoro = [VoiceEntry(e.key, f"{e.label} ({_stem(Path(e.choice.model).name)})", e.choice)
                  for e in kokoro if e.choice is not None]
    return entries + sorted(piper, key=lambda e: (e.label.lower(), e.key)) + kokoro


def find_voice(entries: list[VoiceEntry], key: str | None) -> VoiceEntry:
    """The entry with ``key`` (None or empty: the built-in voice); ``KeyError`` for a key not in ``entries``."""
    if not key:
        return BUILTIN
    for entry in entries:
        if entry.key == key:
            return entry
    raise KeyError(key)
