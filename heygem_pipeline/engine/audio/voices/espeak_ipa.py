"""IPA phonemes of a text from the espeak-ng program, sentence by sentence, for the neural voices.

espeak-ng is GPL: it runs as a separate program under the tool time limits (``run_tool``), never imported. Its
``--ipa`` output drops punctuation and prints one line per clause; the clause marks (, ; : . ! ?) are put back
the way Piper's phonemizer does (the mark after each clause, a space between clauses), because Piper voices are
trained with them and pause on them. Each sentence is its own espeak-ng call (about 10 ms), so a sentence's
phonemes can always be traced back to its text.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from heygem_pipeline.engine.media.tools import require_tool, run_tool
from heygem_pipeline.errors import ToolFailedError
from heygem_pipeline.settings import ToolLimits

# A sentence ends at . ! ? … followed by white space, at the CJK marks, or at a line break.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])\s*|\s*\n\s*")
# A clause ends at one of these marks when white space (or the end) follows: "3.5" and "U.S.A" stay whole.
_CLAUSE = re.compile(r".*?(?:[,;:.!?…]+(?=\s|$)|[，；：。！？]+|$)", re.DOTALL)
_MARKS = {",": ",", "，": ",", ";": ";", "；": ";", ":": ":", "：": ":", ".": ".", "。": ".", "…": ".", "!": "!",
          "！": "!", "?": "?", "？": "?"}
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak-ng's "(en)" when a word switches voice


@dataclass(frozen=True)
class Sentence:
    """One sentence: its text and its phonemes (IPA, NFD-decomposed, clause marks and spaces included)."""

    text: str
    phonemes: str


def split_sentences(text: str) -> Iterator[str]:
    """The sentences of ``text``, stripped, empty ones left out (lazily: the text is scanned once)."""
    start = 0
    for found in _SENTENCE_BREAK.finditer(text):
        if found.end() == found.start() and found.start() in (0, len(text)):
            continue
        piece = text[start:found.start()].strip()
        start = found.end()
        if piece:
            yield piece
    piece = text[start:].strip()
    if piece:
        yield piece


def clauses(sentence: str) -> list[tuple[str, str]]:
    """(clause text, its closing mark in Piper's terms or "") for each clause of ``sentence``."""
    found: list[tuple[str, str]] = []
    for match in _CLAUSE.finditer(sentence):
        clause = match.group(0).strip()
        if not clause:
            continue
        stripped = clause.rstrip("".join(_MARKS))
        mark = _MARKS[clause[len(stripped)]] if len(stripped) < len(clause) else ""
        found.append((clause, mark))
    return found


def ipa_of_sentence(sentence: str, espeak_voice: str, *, subject: str | os.PathLike[str],
                    limits: ToolLimits | None = None) -> str:
    """Phonemes of one sentence from ``espeak-ng -q --ipa`` (the text goes through stdin, never as an option)."""
    espeak = require_tool("espeak-ng")
    command = [espeak, "-q", "-b", "1", "--ipa", "-v", espeak_voice, "--stdin"]
    pieces = clauses(sentence)
    # One clause a line: espeak-ng reads the marks and prints each clause on its own line.
    stdin = "\n".join(clause for clause, _ in pieces).encode("utf-8")
    result = run_tool(command, subject=subject, media_seconds=len(sentence) / 12.0, stdin=stdin, limits=limits)
    if result.returncode != 0:
        raise ToolFailedError("espeak-ng", subject, result.returncode, result.stderr_tail(),
                              doing=f"reading the phonemes of the text with espeak voice {espeak_voice!r}",
                              fix="install the espeak-ng voice the model names (list them with: espeak-ng --voices)")
    output = unicodedata.normalize("NFD", result.stdout.decode("utf-8", errors="replace"))
    lines = [" ".join(_LANGUAGE_SWITCH.sub("", line).split()) for line in output.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    if len(lines) == len(pieces):
        return " ".join(line + mark for line, (_, mark) in zip(lines, pieces, strict=True))
    # espeak-ng split a long clause further (or merged some): keep the words, close with the sentence's mark.
    return " ".join(lines) + (pieces[-1][1] if pieces else "")


def phonemize(text: str, espeak_voice: str, *, subject: str | os.PathLike[str],
              limits: ToolLimits | None = None) -> Iterator[Sentence]:
    """The sentences of ``text`` with their phonemes; sentences without any (only symbols) are left out."""
    for sentence in split_sentences(text):
        phonemes = ipa_of_sentence(sentence, espeak_voice, subject=subject, limits=limits)
        if phonemes.strip(" " + "".join(set(_MARKS.values()))):
            yield Sentence(sentence, phonemes)
