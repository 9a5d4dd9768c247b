"""espeak-ng's own word timing: the reference that caption timing is measured against.

libespeak-ng reports, while it synthesizes, an event at the start of each word with the word's position in the
text and in the audio (milliseconds). The command line cannot report them, so this calls the library (installed
with espeak-ng) through ctypes. It synthesizes exactly what ``espeak-ng -v VOICE -w out.wav --stdin`` does (same
samples; checked in the tests), so the events time the voice of a ``.txt`` script.

The engine does not caption from these events: its method (``alignment``) has to work for recorded voices too.
They are what the method is measured against (tests, ``benchmarks/bench_captions.py``).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import json
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.media.tools import run_tool
from heygem_pipeline.errors import ToolFailedError, ToolMissingError
from heygem_pipeline.settings import DEFAULT_VOICE

_EVENT_END_OF_LIST, _EVENT_WORD = 0, 1
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


class _Event(ctypes.Structure):  # espeak_EVENT, speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class SpokenWord:
    """A word event: the word begins at ``start`` seconds; it is the text's characters [char_start, char_end)."""

    start: float
    char_start: int
    char_end: int


@dataclass(frozen=True)
class Synthesis:
    words: list[SpokenWord]
    samples: np.ndarray  # int16 at ``rate``
    rate: int


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL, int]:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        library = ctypes.CDLL(name)
    except OSError as error:
        raise ToolMissingError("libespeak-ng is not installed; install it with: apt-get install espeak-ng") from error
    library.espeak_Initialize.restype = ctypes.c_int
    rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
    if rate <= 0:
        raise ToolMissingError("libespeak-ng could not start (espeak-ng-data missing?); reinstall espeak-ng")
    return library, rate


def _synthesize_here(text: str, voice: str) -> Synthesis:
    """Word events and samples of ``text`` from this process's library (state carries over between calls)."""
    library, rate = _library()
    chunks: list[np.ndarray] = []
    words: list[SpokenWord] = []

    def collect(wav: ctypes._Pointer[ctypes.c_short], count: int, events: ctypes._Pointer[_Event]) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            event = events[i]
            if event.type == _EVENT_WORD:
                start = event.text_position - 1  # 1-based, in characters
                words.append(SpokenWord(event.audio_position / 1000.0, start, start + event.length))
            i += 1
        return 0

    callback = _Callback(collect)
    data = text.encode("utf-8")
    with _lock:  # the library has one global synthesizer
        library.espeak_SetSynthCallback(callback)
        if library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}; list them with: espeak-ng --voices")
        library.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        library.espeak_Synchronize()
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return Synthesis(words, samples, rate)


def espeak_words(text: str, voice: str = DEFAULT_VOICE) -> Synthesis:
    """Synthesize ``text`` as the ``espeak-ng`` command does and return its word events and samples.

    The library keeps state from one text to the next (a second text's samples differ from the command's, and
    re-initializing it in the same process hangs), so each synthesis runs in a fresh Python process, under the
    same time limits as the command.
    """
    # This very file's package in the child, whatever sys.path the child would start with.
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r}); "
            "from heygem_pipeline.engine.captions.espeak_events import _child; _child()")
    result = run_tool([sys.executable, "-c", code, voice],
                      subject=f"espeak-ng voice {voice}", media_seconds=len(text) / 12.0, stdin=text.encode("utf-8"))
    if result.returncode != 0:
        raise ToolFailedError("espeak-ng", f"espeak-ng voice {voice}", result.returncode, result.stderr_tail(),
                              doing=f"timing the words of voice {voice}")
    data = json.loads(result.stdout)
    samples = np.frombuffer(base64.b64decode(data["samples"]), dtype="<i2")
    return Synthesis([SpokenWord(*w) for w in data["words"]], samples, int(data["rate"]))


def start_errors(text: str, timed: list[tuple[str, float]], voice: str = DEFAULT_VOICE) -> list[float | None]:
    """Signed start errors (seconds, measured minus espeak-ng's) of consecutive pieces of ``text`` (words or cue
    texts, in order, with their measured starts); None where espeak-ng reported no word at the piece's start."""
    events = espeak_words(text, voice).words
    errors: list[float | None] = []
    position = 0
    for piece, start in timed:
        head = piece.split()[0] if piece.split() else piece
        # A whole token ("a" is not the "a" inside "cartridges"); CJK text has no spaces around its pieces.
        match = re.compile(r"(?<!\S)" + re.escape(head) + r"(?!\S)").search(text, position)
        found = match.start() if match else text.find(head, position)
        if found < 0:
            raise ValueError(f"{head!r} is not in the text after character {position}")
        end = found + len(head)
        position = end
        inside = [e.start for e in events if found <= e.char_start < end]
        errors.append(start - min(inside) if inside else None)
    return errors


def _child() -> None:
    """The fresh process of ``espeak_words``: text on stdin, voice in argv, JSON on stdout."""
    synthesis = _synthesize_here(sys.stdin.buffer.read().decode("utf-8"), sys.argv[1])
    json.dump({"rate": synthesis.rate, "words": [[w.start, w.char_start, w.char_end] for w in synthesis.words],
               "samples": base64.b64encode(synthesis.samples.astype("<i2").tobytes()).decode("ascii")}, sys.stdout)
