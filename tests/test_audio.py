"""Script intake: every accepted format, text-to-speech, the Wav2Lip Mel, frame chunking, and every bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

import heygem_pipeline
from heygem_pipeline.engine.audio.features import (
    ANALYSIS_RATE,
    ScriptFeatures,
    frame_count,
    load_features,
    mel_chunk,
    mel_chunk_batch,
    mel_chunk_starts,
    mel_chunks,
    save_features,
    script_features,
    wav2lip_mel,
)
from heygem_pipeline.engine.audio.intake import (
    SCRIPT_EXTENSIONS,
    decode_audio,
    language_of_voice,
    load_analysis,
    normalize_script,
    synthesize_speech,
)
from heygem_pipeline.errors import (
    EmptyFileError,
    InputError,
    NoAudioStreamError,
    NotMediaError,
    TooShortError,
    UnsupportedFormatError,
)
from tests.helpers.media_factory import make_speech, make_tone, make_video, truncate_copy

# --------------------------------------------------------------------------------------------------------------
# Accepted formats

# Container formats that carry the exact audio length decode to it within a sample or two of 16 kHz.
EXACT_FORMATS = ["wav", "mp3", "m4a", "flac", "ogg", "opus"]
VIDEO_FORMATS = ["mp4", "mov", "mkv", "webm"]


@pytest.mark.parametrize("ext", EXACT_FORMATS)
def test_audio_formats_decode_to_source_duration(tmp_path: Path, ext: str) -> None:
    source = make_tone(tmp_path / f"voice.{ext}", 2.0, rate=44100, channels=2)
    samples = decode_audio(source)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / ANALYSIS_RATE - 2.0) <= 0.0011
    assert 0.1 < float(np.max(np.abs(samples))) <= 0.2  # lavfi sine peaks at 1/8: a real tone, not garbage


def test_raw_adts_aac_decodes_with_codec_delay(tmp_path: Path) -> None:
    # Raw .aac (ADTS) has no container to declare priming or padding: up to two AAC frames (~46 ms) are extra.
    samples = decode_audio(make_tone(tmp_path / "voice.aac", 2.0))
    assert 0 <= samples.size / ANALYSIS_RATE - 2.0 <= 2 * 1024 / 44100 + 0.001


@pytest.mark.parametrize("ext", VIDEO_FORMATS)
def test_audio_track_of_a_video_is_the_voice(tmp_path: Path, ext: str) -> None:
    source = make_tone(tmp_path / f"talk.{ext}", 1.5, video=True)
    intake = normalize_script(source, tmp_path / "work")
    assert abs(intake.duration_s - 1.5) <= 0.0011
    assert intake.source == source  # the original audio quality goes into the delivered video


def test_normalize_writes_analysis_wav_and_keeps_source(tmp_path: Path) -> None:
    source = make_tone(tmp_path / "Anna Smith.m4a", 2.0, rate=48000, channels=2)
    intake = normalize_script(source, tmp_path / "work", language="de")
    assert intake.analysis_wav == tmp_path / "work" / "analysis.wav"
    data, rate = soundfile.read(intake.analysis_wav, dtype="float32")
    info = soundfile.info(intake.analysis_wav)
    assert rate == ANALYSIS_RATE and data.ndim == 1 and info.subtype == "FLOAT"
    assert data.size == 2 * ANALYSIS_RATE
    np.testing.assert_array_equal(data, load_analysis(intake.analysis_wav))
    assert (intake.source, intake.upload) == (source, source)
    assert (intake.sample_rate, intake.channels, intake.codec) == (48000, 2, "aac")
    assert intake.language == "de" and intake.text is None and intake.warnings == []
    assert intake.id.startswith("anna_smith_")
    record = intake.as_record()
    assert record["source"] == str(source) and record["duration_s"] == 2.0
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]  # no temp files left


def test_leading_and_trailing_silence_is_kept(tmp_path: Path) -> None:
    rate = 16000
    signal = np.zeros(rate * 2, dtype=np.float32)
    signal[rate // 2: rate] = 0.5 * np.sin(np.arange(rate // 2) * 2 * np.pi * 440 / rate)
    source = tmp_path / "padded.wav"
    soundfile.write(source, signal, rate, subtype="FLOAT")
    samples = decode_audio(source)
    np.testing.assert_allclose(samples, signal, atol=1e-6)


def test_low_sample_rate_is_upsampled_with_a_warning(tmp_path: Path) -> None:
    source = make_tone(tmp_path / "phone.wav", 2.0, rate=8000, channels=1)
    intake = normalize_script(source, tmp_path / "work")
    assert intake.sample_rate == 8000
    assert abs(intake.duration_s - 2.0) <= 0.0011
    assert any("consonant detail is lost" in warning for warning in intake.warnings)


def test_silent_track_warns(tmp_path: Path) -> None:
    source = tmp_path / "silence.wav"
    soundfile.write(source, np.zeros(ANALYSIS_RATE * 2, dtype=np.float32), ANALYSIS_RATE)
    intake = normalize_script(source, tmp_path / "work")
    assert any("silent" in warning for warning in intake.warnings)


def test_hostile_file_names_work(tmp_path: Path) -> None:
    source = make_tone(tmp_path / '-a "quoted" ü.wav', 1.2)
    assert abs(decode_audio(source).size / ANALYSIS_RATE - 1.2) <= 0.0011
    intake = normalize_script(source, tmp_path / "work dir 'x'")
    assert intake.id[0].isalnum() and " " not in intake.id and '"' not in intake.id


def test_extensions_cover_the_issue() -> None:
    assert {"wav", "mp3", "m4a", "aac", "flac", "ogg", "opus", "txt", "mp4", "mov", "mkv", "webm"} <= SCRIPT_EXTENSIONS


# --------------------------------------------------------------------------------------------------------------
# Text scripts


def test_text_script_is_voiced_with_espeak(tmp_path: Path) -> None:
    text = "Hello, welcome to the factory.\nThis script was written as text."
    script = tmp_path / "welcome.txt"
    script.write_text(text, encoding="utf-8")
    intake = normalize_script(script, tmp_path / "work")
    assert intake.text == text and intake.language == "en"
    assert intake.upload == script and intake.source == tmp_path / "work" / "source.wav"
    assert intake.source.is_file() and intake.codec == "pcm_s16le" and intake.sample_rate == 22050
    assert intake.duration_s > 2.0  # both lines were spoken, not just the first
    assert float(np.max(np.abs(load_analysis(intake.analysis_wav)))) > 0.05


def test_synthesize_speech_mandarin_and_option_like_text(tmp_path: Path) -> None:
    dest = synthesize_speech("你好，世界。", tmp_path / "-zh.wav", voice="cmn")
    assert dest == tmp_path / "-zh.wav" and soundfile.info(dest).duration > 0.5
    dashed = synthesize_speech("--help -v xx; rm -rf / $(echo hi)", tmp_path / "dash.wav")
    assert soundfile.info(dashed).duration > 1.0  # spoken as words, not parsed as options
    assert language_of_voice("cmn") == "zh" and language_of_voice("en-us") == "en"


def test_text_script_language_follows_voice(tmp_path: Path) -> None:
    script = tmp_path / "zh.txt"
    script.write_text("你好，欢迎来到工厂。这是一个测试。", encoding="utf-8")
    assert normalize_script(script, tmp_path / "work", voice="cmn").language == "zh"


def test_bad_text_scripts(tmp_path: Path) -> None:
    empty = tmp_path / "blank.txt"
    empty.write_text("  \n\t", encoding="utf-8")
    with pytest.raises(EmptyFileError, match=r"blank\.txt"):
        normalize_script(empty, tmp_path / "work")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(NotMediaError, match=r"binary\.txt"):
        normalize_script(binary, tmp_path / "work")


# --------------------------------------------------------------------------------------------------------------
# Bad inputs


def _raises(error: type[InputError], path: Path, tmp_path: Path) -> InputError:
    with pytest.raises(error) as caught:
        normalize_script(path, tmp_path / "work")
    assert str(path) in str(caught.value) and caught.value.fix
    return caught.value


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    _raises(EmptyFileError, empty, tmp_path)
    with pytest.raises(EmptyFileError, match=r"empty\.wav"):
        decode_audio(empty)


def test_text_renamed_mp3_is_not_media(tmp_path: Path) -> None:
    fake = tmp_path / "voice.mp3"
    fake.write_text("Hello, this is my voice script. It is text, not audio.\n" * 5, encoding="utf-8")
    _raises(NotMediaError, fake, tmp_path)


def test_video_without_audio(tmp_path: Path) -> None:
    _raises(NoAudioStreamError, make_video(tmp_path / "mute.mp4", 1.0), tmp_path)


def test_truncated_upload_decodes_what_is_there(tmp_path: Path) -> None:
    full = make_tone(tmp_path / "full.mp3", 4.0)
    cut = truncate_copy(full, tmp_path / "cut.mp3", 0.3)
    intake = normalize_script(cut, tmp_path / "work")
    assert 1.0 < intake.duration_s < 1.5
    assert any("truncated" in warning for warning in intake.warnings)
    error = _raises(TooShortError, truncate_copy(full, tmp_path / "stub.mp3", 0.1), tmp_path)
    assert "upload" in error.fix


def test_too_short_script(tmp_path: Path) -> None:
    _raises(TooShortError, make_tone(tmp_path / "blip.wav", 0.5), tmp_path)


def test_unsupported_extension(tmp_path: Path) -> None:
    odd = make_tone(tmp_path / "voice.wav", 1.0)
    renamed = odd.rename(tmp_path / "voice.wma")
    _raises(UnsupportedFormatError, renamed, tmp_path)
    bare = tmp_path / "voice"
    bare.write_bytes(b"x")
    _raises(UnsupportedFormatError, bare, tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Mel


def _reference_mel(samples: np.ndarray, pad: str = "constant") -> np.ndarray:
    """FACTS.md written out with numpy alone (only the filterbank comes from librosa)."""
    x = samples.astype(np.float64)
    emphasized = np.empty_like(x)
    emphasized[0] = x[0]
    emphasized[1:] = x[1:] - 0.97 * x[:-1]
    n_fft, hop = 800, 200
    # center=True pads n_fft // 2 on each side: zeros in librosa >= 0.9 (the default), reflection in librosa 0.7.
    padded = np.pad(emphasized, n_fft // 2, mode=pad)
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop: i * hop + n_fft] for i in range(n_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T  # (401, T)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_matches_the_formula(tmp_path: Path) -> None:
    speech = decode_audio(make_speech(tmp_path / "speech.wav", "Lip sync needs exact features."))
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(ANALYSIS_RATE + 137)).astype(np.float32)  # odd length: partial last hop
    for samples in (speech, noise):
        mel = wav2lip_mel(samples)
        assert mel.dtype == np.float32 and mel.shape == (80, 1 + samples.size // 200)
        np.testing.assert_allclose(mel, _reference_mel(samples), atol=1e-4, rtol=0)
        assert mel.min() >= -4 and mel.max() <= 4
    assert heygem_pipeline.wav2lip_mel is wav2lip_mel and "wav2lip_mel" in heygem_pipeline.__all__


def test_mel_reflect_padding_reproduces_librosa_07_edges() -> None:
    rng = np.random.default_rng(1)
    samples = (0.3 * rng.standard_normal(ANALYSIS_RATE)).astype(np.float32)
    reflect = wav2lip_mel(samples, pad_mode="reflect")
    np.testing.assert_allclose(reflect, _reference_mel(samples, pad="reflect"), atol=1e-4, rtol=0)
    default = wav2lip_mel(samples)
    # Only the edge columns depend on the padding; the interior is the same either way.
    np.testing.assert_allclose(default[:, 3:-3], reflect[:, 3:-3], atol=1e-5, rtol=0)
    assert np.max(np.abs(default[:, 0] - reflect[:, 0])) > 0.05


# --------------------------------------------------------------------------------------------------------------
# Chunking


def test_frame_count_is_ceil_without_float_noise() -> None:
    assert frame_count(2.0, 25) == 50
    assert frame_count(2.01, 25) == 51
    assert frame_count(0.1 * 3, 10) == 3  # 0.30000000000000004 * 10 must not become 4
    assert frame_count(1.0, 29.97) == 30
    assert frame_count(4 / 3, 30) == 40
    assert frame_count(0.0, 25) == 0


def test_chunk_starts_follow_the_reference() -> None:
    fps, n_cols = 25.0, 161  # 2 s of audio: 80 * 2 + 1 columns
    n_frames = frame_count(2.0, fps)
    starts = mel_chunk_starts(n_frames, fps, n_cols)
    assert starts.shape == (50,) and starts[0] == 0
    assert starts[10] == int(10 * 80 / fps) == 32
    assert starts[17] == int(17 * (80.0 / fps))  # 54.4 -> 54
    assert starts[-1] == n_cols - 16 and starts.max() == n_cols - 16  # clamped, never runs past the end
    expected = [min(int(i * (80.0 / 29.97)), n_cols - 16) for i in range(60)]
    assert mel_chunk_starts(60, 29.97, n_cols).tolist() == expected


def test_mel_chunks_first_middle_last() -> None:
    mel = np.arange(80 * 161, dtype=np.float32).reshape(80, 161)
    chunks = mel_chunks(mel, 25.0, 50)
    assert chunks.shape == (50, 80, 16) and chunks.flags.c_contiguous
    np.testing.assert_array_equal(chunks[0], mel[:, 0:16])
    np.testing.assert_array_equal(chunks[20], mel[:, 64:80])
    np.testing.assert_array_equal(chunks[49], mel[:, 145:161])  # 156 would run past: clamped to the last 16
    np.testing.assert_array_equal(mel_chunk(mel, 20, 25.0), chunks[20])
    np.testing.assert_array_equal(mel_chunk_batch(mel, [49, 0], 25.0), chunks[[49, 0]])


def test_mel_shorter_than_a_window_is_edge_padded() -> None:
    mel = np.arange(80 * 10, dtype=np.float32).reshape(80, 10)
    chunk = mel_chunk(mel, 3, 25.0)
    assert chunk.shape == (80, 16)
    np.testing.assert_array_equal(chunk[:, :10], mel)
    np.testing.assert_array_equal(chunk[:, 10:], np.repeat(mel[:, -1:], 6, axis=1))


def test_frame_count_covers_the_audio(tmp_path: Path) -> None:
    samples = decode_audio(make_tone(tmp_path / "odd.wav", 1.37, rate=16000, channels=1))
    mel = wav2lip_mel(samples)
    n = frame_count(samples.size / ANALYSIS_RATE, 25.0)
    assert n == math.ceil(1.37 * 25) == 35
    starts = mel_chunk_starts(n, 25.0, mel.shape[1])
    assert starts[-1] + 16 == mel.shape[1]


# --------------------------------------------------------------------------------------------------------------
# Feature cache


def test_features_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    samples = (0.1 * rng.standard_normal(ANALYSIS_RATE)).astype(np.float32)
    features = script_features(samples, language="zh", text="你好")
    path = tmp_path / "cache" / "features.npz"
    save_features(path, features)
    loaded = load_features(path)
    for spec in dataclasses.fields(ScriptFeatures):
        before, after = getattr(features, spec.name), getattr(loaded, spec.name)
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)
            assert before.dtype == after.dtype
        else:
            assert before == after and type(before) is type(after)
    no_text = dataclasses.replace(features, text=None)
    save_features(path, no_text)
    assert load_features(path).text is None
    assert [p.name for p in path.parent.iterdir()] == ["features.npz"]


def test_features_round_trip_extra_array_fields(tmp_path: Path) -> None:
    # ScriptFeatures may gain fields (e.g. visemes): any array field must round-trip without code changes.
    @dataclasses.dataclass(frozen=True)
    class Extended(ScriptFeatures):
        visemes: np.ndarray | None = None

    samples = np.zeros(ANALYSIS_RATE, dtype=np.float32)
    visemes = np.arange(12, dtype=np.int16).reshape(4, 3)
    original = Extended(samples=samples, mel=wav2lip_mel(samples), visemes=visemes)
    path = tmp_path / "features.npz"
    save_features(path, original)
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["visemes"], visemes)
    loaded = load_features(path, cls=Extended)
    assert isinstance(loaded, Extended)
    np.testing.assert_array_equal(loaded.visemes, visemes)
    assert loaded.visemes.dtype == np.int16
    base = load_features(path)  # a reader without the field ignores it
    assert type(base) is ScriptFeatures
    np.testing.assert_array_equal(base.mel, original.mel)
    save_features(path, Extended(samples=samples, mel=original.mel))  # None array field
    assert load_features(path, cls=Extended).visemes is None
