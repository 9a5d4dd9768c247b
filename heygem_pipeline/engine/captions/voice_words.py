"""Caption words timed by the voice that spoke them: no alignment, the neural voice's own phoneme timing.

A Piper voice (``voices.voice_with_piper``) gives (phoneme, start_s, end_s) for each character of the IPA it spoke:
espeak-ng's phonemes of each sentence (``espeak_ipa``), clause marks kept, " " between words, every chunk framed by
"^"/"$" silences, continuous over the whole audio. The same sentences are phonemized again here (espeak-ng is
deterministic; about 10 ms a sentence) so that each sentence's phonemes are found in the timing, then mapped
clause by clause (the text's clauses are espeak_ipa's: each IPA clause ends with its mark). Inside a clause the
written words take the IPA words one to one when the counts agree; otherwise (espeak-ng reads "2024" as three
words, joins "of the" into one) each written word gets a share of the clause's phonemes in proportion to how long
it is to say, its boundaries moved to the nearest gap between IPA words. A word starts with its first phoneme and
ends with its last.

``stages.prepare_script`` calls ``caption_voiced`` with the ``VoicedSpeech``'s timing, espeak voice and sentences
(so nothing is phonemized twice) whenever the voice gave its timing; otherwise it aligns as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from heygem_pipeline.engine.audio.voices.espeak_ipa import Sentence, clauses, phonemize
from heygem_pipeline.engine.audio.voices.speech import PhonemeTiming as Timing
from heygem_pipeline.engine.captions.align import METHOD_VOICE
from heygem_pipeline.engine.captions.cues import CaptionTrack, build_cues
from heygem_pipeline.engine.captions.text import Word
from heygem_pipeline.settings import ToolLimits

MARKS = ",;:.!?"
EDGES = "^$"
STRESS, LENGTH = "ˈˌ", "ːˑ"
LETTER_EXPANDS = 0.05  # what a written word of letters pays for each IPA word past its first (numbers pay nothing)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def spoken_length(word: str) -> float:
    """About how many phonemes a written word takes to say: a letter ~0.85, a digit ~3.5 ("2024" is "twenty
    twenty-four"), a decimal point 4 ("point"); a word of symbols only a little."""
    length = 0.0
    for number in _NUMBER.findall(word):
        length += 3.5 * sum(c.isdigit() for c in number) + 4.0 * number.count(".")
    length += 0.85 * sum(c.isalpha() for c in _NUMBER.sub("", word))
    return max(length, 0.3)


def _locate(sentences: Sequence[Sentence], timing: Sequence[Timing]) -> list[list[Timing | None]] | None:
    """Each sentence's phonemes with their timing entries (None for a space Piper dropped where it cut a long
    sentence into chunks), or None when the timing does not spell the sentences' phonemes."""
    spoken = [entry for entry in timing if entry[0] not in EDGES]
    at, located = 0, []
    for sentence in sentences:
        entries: list[Timing | None] = []
        for char in sentence.phonemes:
            if at < len(spoken) and spoken[at][0] == char:
                entries.append(spoken[at])
                at += 1
            elif char == " ":
                entries.append(None)
            else:
                return None
        located.append(entries)
    return located if at == len(spoken) else None


def _ipa_clauses(phonemes: str, entries: list[Timing | None]) -> list[list[list[Timing]]]:
    """A sentence's IPA as clauses (split after each mark) of words (split at spaces) of timed sounds: a stress
    mark's time goes to the sound after it, a length mark's to the sound before it."""
    found: list[list[list[Timing]]] = [[[]]]
    stress_from: float | None = None
    for char, entry in zip(phonemes, entries, strict=True):
        if char == " ":
            if found[-1][-1]:
                found[-1].append([])
        elif char in MARKS:
            found.append([[]])
        elif entry is None:
            continue
        elif char in STRESS:
            stress_from = entry[1] if stress_from is None else stress_from
        elif char in LENGTH and found[-1][-1]:
            last = found[-1][-1][-1]
            found[-1][-1][-1] = (last[0] + char, last[1], entry[2])
        else:
            start = entry[1] if stress_from is None else stress_from
            found[-1][-1].append((entry[0], start, entry[2]))
            stress_from = None
    cleaned = [[word for word in clause if word] for clause in found]
    return [clause for clause in cleaned if clause]


def _group(written: list[str], ipa_words: list[list[Timing]]) -> list[int]:
    """Where each written word's IPA words begin (fewer written words than IPA words): the grouping whose shares
    of the clause's phonemes come nearest the words' shares of its spoken length (a dynamic programme); a
    word of letters pays for every IPA word past its first (numbers are the words that expand)."""
    weights = [spoken_length(text) for text in written]
    expands = [0.0 if any(char.isdigit() for char in text) else LETTER_EXPANDS for text in written]
    sizes = [len(word) for word in ipa_words]
    total, weight_total = float(sum(sizes)), sum(weights)
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    n, m = len(weights), len(ipa_words)
    best = [[float("inf")] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for k in range(1, n + 1):
        for j in range(k, m - (n - k) + 1):
            for i in range(k - 1, j):
                share = (prefix[j] - prefix[i]) / total - weights[k - 1] / weight_total
                cost = best[k - 1][i] + share * share + expands[k - 1] * (j - i - 1)
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    starts, j = [], m
    for k in range(n, 0, -1):
        j = back[k][j]
        starts.append(j)
    return starts[::-1]


def _place(written: list[str], ipa_words: list[list[Timing]], at: float) -> list[Word]:
    """``_distribute`` for the words that are spoken; a token of symbols only ("—", "&") is not spoken by
    espeak-ng's voices as a word of its own: it stays in the captions, for no time, where the word before it ends."""
    spoken = [text for text in written if any(char.isalnum() for char in text)]
    timed = iter(_distribute(spoken, ipa_words, at))
    words: list[Word] = []
    for text in written:
        if any(char.isalnum() for char in text):
            words.append(next(timed))
        else:
            moment = words[-1].end if words else at
            words.append(Word(text, moment, moment))
    return words


def _distribute(written: list[str], ipa_words: list[list[Timing]], at: float) -> list[Word]:
    """Written words over a clause's IPA words: one to one when the counts agree; grouped by spoken length when
    IPA words are more (numbers read out); else split by spoken length, inside IPA words where espeak-ng joined
    written ones ("of the")."""
    if not ipa_words or not written:
        return [Word(text, round(at, 3), round(at, 3)) for text in written]
    if len(written) <= len(ipa_words):
        starts = [*_group(written, ipa_words), len(ipa_words)]
        return [Word(text, round(ipa_words[i][0][1], 3), round(ipa_words[j - 1][-1][2], 3))
                for text, i, j in zip(written, starts, starts[1:], strict=False)]
    phonemes = [entry for word in ipa_words for entry in word]
    gaps, count = [], 0
    for word in ipa_words[:-1]:
        count += len(word)
        gaps.append(count)
    total, weights = len(phonemes), [spoken_length(text) for text in written]
    bounds, running = [0], 0.0
    for index, weight in enumerate(weights[:-1]):
        running += weight
        target = total * running / sum(weights)
        lowest = min(bounds[-1] + 1, total)
        highest = max(total - (len(written) - 1 - index), lowest)
        allowed = [gap for gap in gaps if lowest <= gap <= highest and abs(gap - target) <= 1.5]
        bounds.append(min(allowed, key=lambda gap: abs(gap - target)) if allowed
                      else min(max(round(target), lowest), highest))
    bounds.append(total)
    words = []
    for text, first, last in zip(written, bounds, bounds[1:], strict=False):
        if last > first:
            words.append(Word(text, round(phonemes[first][1], 3), round(phonemes[last - 1][2], 3)))
        else:
            moment = phonemes[first - 1][2] if first else phonemes[0][1]
            words.append(Word(text, round(moment, 3), round(moment, 3)))
    return words


def words_from_phonemes(text: str, timing: Sequence[Timing], *, espeak_voice: str = "en-us",
                        sentences: Sequence[Sentence] | None = None, subject: str | os.PathLike[str] = "script",
                        limits: ToolLimits | None = None) -> list[Word]:
    """Every written word of ``text`` (as written, punctuation attached) with its start and end from ``timing``,
    the voice's (phoneme, start_s, end_s) for that text.

    ``espeak_voice``: the voice's (``PiperVoice.config.espeak_voice``); ``sentences``: ``espeak_ipa.phonemize``'s
    result when the caller has it (else it is computed again). Raises ``ValueError`` when ``timing`` is not the
    timing of these phonemes (another text, another espeak voice).
    """
    if sentences is None:
        sentences = list(phonemize(text, espeak_voice, subject=subject, limits=limits))
    located = _locate(sentences, timing)
    if located is None:
        raise ValueError("the phoneme timing does not belong to this text (or was phonemized with another voice)")
    words: list[Word] = []
    at = 0.0
    for sentence, entries in zip(sentences, located, strict=True):
        text_clauses = [clause.split() for clause, _ in clauses(sentence.text)]
        ipa = _ipa_clauses(sentence.phonemes, entries)
        if len(text_clauses) != len(ipa):  # espeak-ng split or joined clauses: the sentence is one unit
            text_clauses = [[word for clause in text_clauses for word in clause]]
            ipa = [[word for clause in ipa for word in clause]]
        for written, ipa_words in zip(text_clauses, ipa, strict=True):
            placed = _place(written, ipa_words, at)
            words += placed
            at = placed[-1].end if placed else at
    return words


def caption_voiced(text: str, timing: Sequence[Timing], duration_s: float, language: str, *,
                   source: str = "script text", espeak_voice: str = "en-us",
                   sentences: Sequence[Sentence] | None = None, subject: str | os.PathLike[str] = "script",
                   limits: ToolLimits | None = None) -> CaptionTrack:
    """Captions for ``text`` as a voice spoke it (``VoicedSpeech.timing`` and ``duration_s``): every written word
    timed by ``words_from_phonemes``, cut into cues by ``build_cues``; method ``METHOD_VOICE``."""
    words = words_from_phonemes(text, timing, espeak_voice=espeak_voice, sentences=sentences, subject=subject,
                                limits=limits)
    return CaptionTrack(build_cues(words, duration_s), words, METHOD_VOICE, language, source, round(duration_s, 3))
