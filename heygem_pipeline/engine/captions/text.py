"""The text of a script as captions need it: sentences, clauses, CJK width, and ``Word``, a piece of it timed.

Shared by the aligners (``alignment``, ``voice_timing``) and the cue builder (``captions``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """A unit of the script's text as written (a word, or for the voiced-segment method a clause) and when it is
    spoken, in seconds from the start of the audio."""

    text: str
    start: float
    end: float


def is_wide(char: str) -> bool:
    """CJK ideographs, kana, hangul and full-width forms: written without spaces, two columns wide."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def text_language(text: str, default: str) -> str:
    """``zh`` when the text is mostly CJK characters (a Chinese transcript of an audio script), else ``default``."""
    letters = [c for c in text if c.isalpha()]
    wide = sum(1 for c in letters if is_wide(c))
    return "zh" if letters and wide / len(letters) > 0.3 else default


_CLOSERS = "\"'”’」』）)\\]"
_SENTENCE_END = re.compile(
    rf"(?<=[.!?…])\s+|(?<=[.!?…][{_CLOSERS}])\s+"  # Latin: end mark (and a closing quote), then a space
    rf"|(?<=[。！？])(?![{_CLOSERS}])|(?<=[。！？][{_CLOSERS}])"  # CJK: no space follows
    r"|\n\s*\n")  # a blank line
_CLAUSE_END = re.compile(r"(?<=[,;:，、；：])\s*")


_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.",
                            "approx.", "inc.", "ltd.", "co."})
SENTENCE_ENDS = tuple(".!?…。！？")


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (a word or a piece of a script) ends a sentence: an end mark, closing quotes allowed,
    and not a common abbreviation ("Mr.", "e.g.")."""
    text = text.rstrip(_CLOSERS.replace("\\", ""))
    if not text.endswith(SENTENCE_ENDS):
        return False
    last = text.split()[-1].lower() if text.split() else ""
    return last not in _ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Sentences of a script (full stops, question and exclamation marks, in Latin or CJK punctuation; blank
    lines), whitespace-normalized, empty ones dropped; "Mr." and the like end none."""
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = " ".join(piece.split())
        if not piece:
            continue
        if sentences and not ends_sentence(sentences[-1]):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return sentences


def split_clauses(sentence: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_END.split(sentence) if c and c.strip()]


def spoken_weight(text: str) -> float:
    """Roughly how long ``text`` takes to say, in syllables: a CJK character or a digit is one; Latin letters
    count a third each; punctuation nothing."""
    weight = 0.0
    for char in text:
        if (is_wide(char) and char.isalpha()) or char.isdigit():
            weight += 1.0
        elif char.isalpha():
            weight += 1.0 / 3.0
    return max(weight, 0.5)
