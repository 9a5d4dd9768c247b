"""Captions of a script: cues built from the aligned words, SRT and WebVTT sidecars, the ``captions.json`` record.

A cue is at most ``MAX_LINES`` lines of at most ``MAX_LINE_WIDTH`` columns (the usual broadcast guideline: two
lines of 42 characters; a CJK character counts two columns), starts when its first word is spoken, and breaks at
sentence ends, long pauses, clause punctuation once it is well filled, and after ``MAX_CUE_SECONDS``. Burning
captions into the picture is ``burnin.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.captions.align import align_text
from heygem_pipeline.engine.captions.text import SENTENCE_ENDS, Word, ends_sentence, is_wide
from heygem_pipeline.engine.media.files import atomic_output

MAX_LINE_WIDTH = 42  # columns
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
MIN_CUE_SECONDS = 1.0  # shorter cues flash by: they stay up longer when the next one lets them
LINGER_SECONDS = 0.4  # a cue stays this long after its last word, unless the next one starts
MIN_GAP_SECONDS = 0.08  # two frames between consecutive cues, so players show them as separate
PAUSE_BREAK_SECONDS = 0.7  # a pause this long starts a new cue
CLAUSE_ENDS = tuple(",;:，、；：—")
NO_BREAK_BEFORE = set(",.;:!?)]}%…，。、；：！？）」』】》”’")
CAPTIONS_FILE = "captions.json"
CAPTIONS_FORMAT = 1


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # lines separated by "\n"


def display_width(text: str) -> int:
    return sum(2 if is_wide(c) else 1 for c in text)


def join_text(left: str, right: str) -> str:
    """Two pieces of running text: a space between them, except where CJK text meets (written without spaces)."""
    if not left or not right:
        return left or right
    return left + ("" if is_wide(left[-1]) or is_wide(right[0]) else " ") + right


def _break_points(text: str) -> list[tuple[int, int]]:
    """Where ``text`` may be broken into lines: (end of the first line, start of the next) index pairs."""
    points = []
    for i in range(1, len(text)):
        if text[i] == " ":
            points.append((i, i + 1))
        elif text[i - 1] != " " and (is_wide(text[i - 1]) or is_wide(text[i])) and text[i] not in NO_BREAK_BEFORE:
            points.append((i, i))
    return points


def wrap_lines(text: str, max_width: int = MAX_LINE_WIDTH, max_lines: int = MAX_LINES) -> list[str] | None:
    """``text`` as at most ``max_lines`` lines of at most ``max_width`` columns, as balanced as possible (and
    broken after punctuation where that costs little), or None when it does not fit."""
    text = " ".join(text.split())
    prefix = [0]
    for char in text:
        prefix.append(prefix[-1] + (2 if is_wide(char) else 1))
    if prefix[-1] <= max_width:
        return [text]
    if max_lines < 2 or prefix[-1] > max_lines * max_width:
        return None
    best: tuple[float, list[str]] | None = None
    for end, start in _break_points(text):
        if prefix[end] > max_width:
            break
        if max_lines == 2:
            tail = [text[start:]] if prefix[-1] - prefix[start] <= max_width else None
        else:
            tail = wrap_lines(text[start:], max_width, max_lines - 1)
        if tail is None:
            continue
        widths = [prefix[end]] + [display_width(line) for line in tail]
        score = max(widths) - min(widths) - (6 if text[end - 1] in SENTENCE_ENDS + CLAUSE_ENDS else 0)
        if best is None or score < best[0]:
            best = (score, [text[:end], *tail])
    return best[1] if best else None


def _split_long(word: Word, max_width: int) -> list[Word]:
    """A unit too long for one cue (a long clause from the voiced-segment method) as pieces that each fit one,
    cut greedily at line-break points and timed in proportion to their length."""
    text = " ".join(word.text.split())
    if wrap_lines(text, max_width) is not None:
        return [word]
    pieces: list[str] = []
    begin, fit = 0, None  # start of the current piece; the last break point up to which it fits
    for end, following in [*_break_points(text), (len(text), len(text))]:
        if wrap_lines(text[begin:end], max_width) is not None:
            fit = (end, following)
            continue
        cut, resume = fit or (end, following)  # nothing fits: a single word longer than a cue stays whole
        pieces.append(text[begin:cut].strip())
        begin, fit = resume, None
        if begin < end and wrap_lines(text[begin:end], max_width) is not None:
            fit = (end, following)
    if begin < len(text):
        pieces.append(text[begin:].strip())
    return _timed_pieces(word, [p for p in pieces if p])


def _split_slow(word: Word) -> list[Word]:
    """A unit spoken for longer than a cue may stay up (a slow clause) as pieces of about equal width, cut at the
    break points nearest the equal shares."""
    text = " ".join(word.text.split())
    points = _break_points(text)
    count = math.ceil((word.end - word.start) / MAX_CUE_SECONDS)
    if count < 2 or not points:
        return [word]
    total = display_width(text)
    cuts: list[tuple[int, int]] = []
    for k in range(1, count):
        goal = total * k / count
        best = min(points, key=lambda p: abs(display_width(text[:p[0]]) - goal))
        if not cuts or best[0] > cuts[-1][0]:
            cuts.append(best)
    pieces, begin = [], 0
    for end, following in cuts:
        pieces.append(text[begin:end].strip())
        begin = following
    pieces.append(text[begin:].strip())
    return _timed_pieces(word, [p for p in pieces if p])


def _timed_pieces(word: Word, pieces: list[str]) -> list[Word]:
    total = sum(display_width(p) for p in pieces)
    words, at = [], word.start
    for piece in pieces:
        length = (word.end - word.start) * display_width(piece) / total
        words.append(Word(piece, round(at, 3), round(at + length, 3)))
        at += length
    return words


def build_cues(words: list[Word], duration: float | None = None, max_width: int = MAX_LINE_WIDTH) -> list[Cue]:
    """Group timed words (or clauses) into readable cues; ``duration``: the audio's, which no cue outlasts."""
    units = [part for word in words for piece in _split_long(word, max_width) for part in _split_slow(piece)]
    groups: list[list[Word]] = []
    for unit in units:
        if groups:
            current = groups[-1]
            text = " ".join(w.text for w in current)
            last = current[-1].text
            if not (ends_sentence(last) or unit.start - current[-1].end > PAUSE_BREAK_SECONDS
                    or unit.end - current[0].start > MAX_CUE_SECONDS
                    or wrap_lines(join_text(_joined(current), unit.text), max_width) is None
                    or (last.endswith(CLAUSE_ENDS) and display_width(text) >= max_width * 0.6)):
                current.append(unit)
                continue
        groups.append([unit])
    cues: list[Cue] = []
    for i, group in enumerate(groups):
        start = group[0].start
        following = groups[i + 1][0].start - MIN_GAP_SECONDS if i + 1 < len(groups) else float("inf")
        if duration is not None:
            following = min(following, duration)
        end = min(max(group[-1].end + LINGER_SECONDS, start + MIN_CUE_SECONDS), following)
        end = max(end, min(group[-1].end, following), start + 0.1)
        lines = wrap_lines(_joined(group), max_width) or [_joined(group)]
        cues.append(Cue(round(start, 3), round(end, 3), "\n".join(lines)))
    return cues


def _joined(group: list[Word]) -> str:
    text = ""
    for word in group:
        text = join_text(text, word.text)
    return text


# --------------------------------------------------------------------------------------------- formats


def _clock(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _safe_lines(text: str) -> list[str]:
    # An arrow would read as a timing line, an empty line would end the cue.
    return [line.replace("-->", "->") for line in text.split("\n") if line.strip()]


def to_srt(cues: list[Cue]) -> str:
    blocks = [f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(_safe_lines(c.text))
              for i, c in enumerate(cues, 1)]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def to_webvtt(cues: list[Cue]) -> str:
    def escape(line: str) -> str:
        return line.replace("&", "&amp;").replace("<", "&lt;")  # a '<' would open a tag

    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n" + "\n".join(escape(x) for x in _safe_lines(c.text))
              for c in cues]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


# ------------------------------------------------------------------------------------------ the record


@dataclass
class CaptionTrack:
    """The captions of one script: its cues, the words they were built from, and how they were timed."""

    cues: list[Cue]
    words: list[Word]
    method: str  # alignment.METHOD_POCKETSPHINX or METHOD_VOICED
    language: str
    source: str  # "script text" or "transcript"
    duration_s: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """For the script's record and the manifest: how the captions were made, without the cues."""
        return {"status": "captioned", "source": self.source, "method": self.method, "language": self.language,
                "cues": len(self.cues), "warnings": list(self.warnings)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        data = {"format": CAPTIONS_FORMAT, **dataclasses.asdict(self)}
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CaptionTrack:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.pop("format", None) != CAPTIONS_FORMAT:
            raise ValueError(f"{path}: not a captions file of format {CAPTIONS_FORMAT}; prepare the script again")
        data["cues"] = [Cue(**c) for c in data["cues"]]
        data["words"] = [Word(**w) for w in data["words"]]
        return cls(**data)


def caption_speech(text: str, samples: np.ndarray, language: str, *, source: str = "script text",
                   rate: int = 16000) -> CaptionTrack:
    """Captions for ``text`` spoken in ``samples`` (16 kHz mono): aligned (``alignment.align_text``), then cut
    into cues."""
    duration = len(samples) / rate
    alignment = align_text(text, samples, language, rate)
    return CaptionTrack(build_cues(alignment.words, duration), alignment.words, alignment.method,
                        alignment.language, source, round(duration, 3), alignment.warnings)


def write_sidecars(track: CaptionTrack, video: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``<video>.srt`` and ``<video>.vtt`` beside the video (UTF-8), written atomically."""
    video = Path(video)
    srt, vtt = video.with_suffix(".srt"), video.with_suffix(".vtt")
    with atomic_output(srt) as tmp:
        tmp.write_text(to_srt(track.cues), encoding="utf-8")
    with atomic_output(vtt) as tmp:
        tmp.write_text(to_webvtt(track.cues), encoding="utf-8")
    return srt, vtt
