"""Timing text to speech without an aligner: sentences and clauses placed on the voiced segments of the audio.

For languages PocketSphinx has no model for (Chinese, …) and for English speech that cannot be aligned word by
word. The voice is found by its energy; each unit (sentence, clause) gets voiced time in proportion to how long it
takes to say, and the boundaries between units move to the pauses nearest their proportional places.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heygem_pipeline.engine.captions.text import Word, split_clauses, split_sentences, spoken_weight

RATE = 16000  # the analysis audio's rate (audio.ANALYSIS_RATE)
FRAME_SECONDS = 0.01


def voiced_segments(samples: np.ndarray, rate: int = RATE, *, min_pause: float = 0.15,
                    min_voiced: float = 0.05) -> list[tuple[float, float]]:
    """Spans (seconds) where the voice is on: 10 ms RMS above a threshold set between the recording's noise floor
    and its speech level; pauses shorter than ``min_pause`` (stop closures, gaps between words) are bridged."""
    hop = rate // 100
    n = len(samples) // hop
    if n == 0:
        return []
    frames = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor, top = np.percentile(level, 10), np.percentile(level, 95)
    voiced = level > max(top - 35.0, floor + 0.3 * (top - floor))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * FRAME_SECONDS < min_pause:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a * FRAME_SECONDS, b * FRAME_SECONDS) for a, b in merged if (b - a) * FRAME_SECONDS >= min_voiced]


def time_to_voice(weights: list[float], segments: list[tuple[float, float]], start: float,
                  end: float) -> list[tuple[float, float]]:
    """Times of consecutive units (sentences, clauses) of the given spoken ``weights`` inside [start, end].

    Each unit gets voiced time in proportion to its weight; each boundary then moves to the pause between voiced
    segments that lies nearest its proportional place (a dynamic programme keeps them in order, prefers longer
    pauses, and leaves a boundary where it is when no pause is near). Units start where the voice resumes.
    """
    inside = [(max(a, start), min(b, end)) for a, b in segments if b > start and a < end]
    n = len(weights)
    if n == 0:
        return []
    if not inside:  # no voice: spread evenly
        step = (end - start) / n
        return [(start + i * step, start + (i + 1) * step) for i in range(n)]
    first, last = inside[0][0], inside[-1][1]
    durations = np.array([b - a for a, b in inside])
    voiced_before = np.concatenate([[0.0], np.cumsum(durations)])  # voiced time before segment i
    total = float(voiced_before[-1])
    shares = np.cumsum(weights)[:-1] / float(np.sum(weights))
    targets = shares * total  # boundaries in voiced time
    unit = total / n

    def to_time(voiced: float) -> float:
        i = min(int(np.searchsorted(voiced_before, voiced, side="right")) - 1, len(inside) - 1)
        return inside[i][0] + (voiced - voiced_before[i])

    # Candidates: every pause (voiced coordinate, gap start, gap end, length) and one virtual boundary per target.
    pauses = [(float(voiced_before[i + 1]), inside[i][1], inside[i + 1][0]) for i in range(len(inside) - 1)]
    candidates = [(c, a, b, -1) for c, a, b in pauses] + [(float(t), to_time(t), to_time(t), k)
                                                          for k, t in enumerate(targets)]
    candidates.sort(key=lambda c: (c[0], c[3]))
    scale = 0.35 * unit

    def cost(k: int, cand: tuple[float, float, float, int]) -> float:
        coordinate, gap_start, gap_end, virtual_for = cand
        if virtual_for >= 0:
            return 6.0 if virtual_for == k else np.inf
        return ((coordinate - targets[k]) / scale) ** 2 - min(gap_end - gap_start, 0.6)

    m = len(candidates)
    best = np.full((n - 1, m), np.inf)
    back = np.full((n - 1, m), -1, dtype=np.int64)
    for k in range(n - 1):
        running, running_at = (0.0, -1) if k == 0 else (np.inf, -1)
        for i in range(m):
            if running < np.inf:
                best[k, i] = running + cost(k, candidates[i])
                back[k, i] = running_at
            if k > 0 and best[k - 1, i] < running:  # boundary k-1 at i allows boundary k at i+1 onwards
                running, running_at = best[k - 1, i], i
    chosen: list[int] = []
    if n > 1:
        i = int(np.argmin(best[n - 2]))
        for k in range(n - 2, -1, -1):
            chosen.append(i)
            i = int(back[k, i])
        chosen.reverse()
    times, at = [], first
    for i in chosen:
        _, gap_start, gap_end, _ = candidates[i]
        times.append((at, gap_start))
        at = gap_end
    times.append((at, last))
    return times


def time_sentences(text: str, samples: np.ndarray, rate: int = RATE, offset: float = 0.0,
                   weigh: Callable[[str], float] = spoken_weight) -> list[Word]:
    """Sentences timed to the voiced segments, then clauses within each sentence the same way. ``offset``: where
    ``samples`` start in the audio (added to every time); ``weigh``: how long a piece of text takes to say, in
    any unit (default: syllables, roughly; English passes its phone count)."""
    segments = [(a + offset, b + offset) for a, b in voiced_segments(samples, rate)]
    duration = len(samples) / rate
    sentences = split_sentences(text)
    words: list[Word] = []
    for sentence, (start, end) in zip(sentences, time_to_voice([weigh(s) for s in sentences], segments,
                                                               offset, offset + duration), strict=True):
        clauses = split_clauses(sentence)
        spans = time_to_voice([weigh(c) for c in clauses], segments, start, end)
        words.extend(Word(c, round(a, 3), round(b, 3)) for c, (a, b) in zip(clauses, spans, strict=True))
    return words
