"""MuseTalk 1.5's audio path (log-mel → whisper-tiny hidden states → audio prompts) against the reference fixture.

The fixture (``tests/data/musetalk/audio.npz``) holds the reference's values for a 2.0 s voice on the stand-in
weights (``tests/helpers/musetalk_fixture.standin_models()``); the tolerance is 1e-4, and the tests also print the
largest difference seen (on 2 threads it is 0: the values are reproduced bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from heygem_pipeline.engine.lipsync.musetalk.audio import (
    SEGMENT_SAMPLES,
    audio_prompts,
    log_mel,
    mel_filters,
    prompt_count,
    read_wave_16k,
    whisper_features,
)
from heygem_pipeline.engine.lipsync.musetalk.whisper import WhisperEncoder, load_whisper
from heygem_pipeline.errors import ModelFileError
from tests.helpers.musetalk_fixture import FIXTURE, fixture, standin_models

TOL = 1e-4
VOICE = FIXTURE / "inputs" / "voice_16k.wav"


@pytest.fixture(autouse=True, scope="module")
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return fixture("audio")


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    return load_whisper(standin_models())


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return read_wave_16k(VOICE)


def _max_err(ours: torch.Tensor | np.ndarray, theirs: np.ndarray, what: str) -> float:
    err = float(np.abs(np.asarray(ours, dtype=np.float64) - theirs.astype(np.float64)).max())
    print(f"{what}: max abs error {err:.3g}")
    return err


def test_waveform_is_read_as_the_reference_reads_it(wave: np.ndarray, ref: dict[str, np.ndarray]) -> None:
    assert wave.dtype == np.float32
    assert len(wave) == int(ref["librosa_length"])
    np.testing.assert_array_equal(wave, ref["waveform"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa.load imports audioread (aifc, audioop, sunau)
def test_other_rates_and_stereo_are_read_like_librosa_load(tmp_path: Path) -> None:
    import librosa
    import soundfile

    stereo = (0.1 * np.random.default_rng(1).standard_normal((44100, 2))).astype(np.float32)
    for rate, subtype in ((44100, "PCM_16"), (22050, "FLOAT")):
        path = tmp_path / f"voice_{rate}.wav"
        soundfile.write(path, stereo, rate, subtype=subtype)
        np.testing.assert_array_equal(read_wave_16k(path), librosa.load(path, sr=16000)[0])


def test_mel_filters_are_slaney_and_match_the_preprocessor_config() -> None:
    import librosa

    filters = mel_filters()
    assert filters.shape == (201, 80) and filters.dtype == np.float64
    expected = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=0.0, fmax=8000.0, htk=False, norm="slaney",
                                   dtype=np.float64)
    np.testing.assert_allclose(filters.T, expected, rtol=0, atol=1e-12)
    config = json.loads((standin_models() / "whisper" / "preprocessor_config.json").read_text())
    if "mel_filters" in config:  # openai/whisper-tiny's file has them; the stand-in's does not
        given = np.asarray(config["mel_filters"], dtype=np.float64)
        np.testing.assert_allclose(filters, given.T if given.shape == (80, 201) else given, rtol=0, atol=1e-7)


def test_log_mel_matches_the_reference(wave: np.ndarray, ref: dict[str, np.ndarray]) -> None:
    mel = log_mel(wave)
    assert mel.shape == (1, 80, 3000) and mel.dtype == torch.float32
    assert _max_err(mel, ref["mel"], "log-mel") <= TOL


def test_hidden_states_match_the_reference(encoder: WhisperEncoder, ref: dict[str, np.ndarray]) -> None:
    hidden = encoder(torch.from_numpy(ref["mel"]))
    assert hidden.shape == (1, 1500, 5, 384)
    assert _max_err(hidden[:, :108], ref["whisper_hidden_stacked_first"], "whisper hidden states") <= TOL
    digest = hashlib.sha256(hidden.numpy().tobytes()).hexdigest()
    print("whisper hidden states bit-equal to the reference:", digest == str(ref["whisper_hidden_stacked_sha256"]))


def test_features_and_prompts_match_the_reference(encoder: WhisperEncoder, wave: np.ndarray,
                                                  ref: dict[str, np.ndarray]) -> None:
    features = whisper_features(encoder, wave)
    assert features.shape == (1, 100, 5, 384)  # floor(2.0 s · 50)
    assert _max_err(features, ref["whisper_hidden_stacked_first"][:, :100], "whisper features") <= TOL
    prompts = audio_prompts(features, len(wave))
    assert prompts.shape == (50, 50, 384) and prompts.dtype == torch.float32
    assert _max_err(prompts, ref["audio_prompts"], "audio prompts") <= TOL
    # Frame 0 sees 4 zero frames, then whisper frames 0..5; token = 5·time + layer.
    assert torch.equal(prompts[0, :20], torch.zeros(20, 384))
    assert torch.equal(prompts[0, 20 + 5 * 1 + 3], features[0, 1, 3])
    # In batches: the same values.
    assert torch.equal(torch.cat([audio_prompts(features, len(wave), start=s, stop=s + 8) for s in range(0, 50, 8)]),
                       prompts)


@pytest.mark.slow
def test_a_voice_over_30_s_is_two_segments(encoder: WhisperEncoder, wave: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    long = np.concatenate([np.tile(wave, 15), 0.05 * rng.standard_normal(16000 * 31 - 15 * len(wave))])
    long = long.astype(np.float32)  # 31.0 s
    mel = log_mel(long)
    assert mel.shape == (2, 80, 3000)
    # Each segment has its own padding, STFT and maximum.
    torch.testing.assert_close(mel[1:], log_mel(long[SEGMENT_SAMPLES:]), rtol=0, atol=0)
    features = whisper_features(encoder, long)
    assert features.shape == (1, 1550, 5, 384)
    torch.testing.assert_close(features[:, 1500:], encoder(mel[1:])[:, :50], rtol=0, atol=0)
    prompts = audio_prompts(features, len(long))
    assert prompts.shape == (prompt_count(len(long)), 50, 384) == (775, 50, 384)
    # The last frame's window is whisper frames 1544..1553: 6 real ones, then 4 of the zero padding.
    assert torch.equal(prompts[-1, 25:30], features[0, 1549]) and torch.equal(prompts[-1, 30:], torch.zeros(20, 384))
    assert prompt_count(int(16000 * 2.5), fps=25) == 62 and prompt_count(16000 * 2, fps=30.0) == 60


def test_the_encoder_loads_strictly_ignoring_the_decoder(encoder: WhisperEncoder) -> None:
    state = torch.load(standin_models() / "whisper" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    encoder_keys = {k for k in state if k.startswith("model.encoder.")}
    assert len(encoder_keys) == 67 and any(k.startswith("model.decoder.") for k in state)
    ours = encoder.state_dict()
    assert {f"model.encoder.{k}" for k in ours} == encoder_keys
    assert all(torch.equal(ours[k.removeprefix("model.encoder.")], state[k]) for k in encoder_keys)
    assert not encoder.training and all(p.device.type == "cpu" for p in encoder.parameters())


def _copy_config(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "whisper"
    folder.mkdir(parents=True)
    shutil.copy(standin_models() / "whisper" / "config.json", folder / "config.json")
    return folder


def _tiny_encoder_file(folder: Path, drop: str | None = None, extra: str | None = None) -> None:
    """An encoder-only state dict, each tensor an expanded scalar (a few kB), without ``drop``, with ``extra``."""
    with torch.device("meta"):
        shapes = {f"model.encoder.{k}": v.shape for k, v in WhisperEncoder().state_dict().items()}
    state = {k: torch.zeros(()).expand(shape) for k, shape in shapes.items() if k != drop}
    if extra:
        state[extra] = torch.zeros(3)
    torch.save(state, folder / "pytorch_model.bin")


def _one_line(exc: pytest.ExceptionInfo[ModelFileError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_files_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as exc:
        load_whisper(tmp_path)
    assert "whisper folder not found" in _one_line(exc) and "models/whisper" in _one_line(exc)
    folder = tmp_path / "models" / "whisper"
    folder.mkdir(parents=True)
    with pytest.raises(ModelFileError, match=r"config\.json: whisper config\.json not found"):
        load_whisper(tmp_path / "models")
    _copy_config(tmp_path / "b")
    with pytest.raises(ModelFileError, match=r"pytorch_model\.bin: whisper weights not found"):
        load_whisper(tmp_path / "b" / "models")
    (tmp_path / "b" / "models" / "whisper" / "pytorch_model.bin").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelFileError, match="not a readable torch file") as exc:
        load_whisper(tmp_path / "b" / "models")
    _one_line(exc)


def test_missing_extra_or_misshapen_keys_fail_with_one_line(tmp_path: Path) -> None:
    folder = _copy_config(tmp_path)
    _tiny_encoder_file(folder)
    assert isinstance(load_whisper(tmp_path / "models"), WhisperEncoder)  # names and shapes right: loads
    _tiny_encoder_file(folder, drop="model.encoder.layers.2.fc1.bias")
    with pytest.raises(ModelFileError, match=r"1 missing \(e\.g\. model\.encoder\.layers\.2\.fc1\.bias\)") as exc:
        load_whisper(tmp_path / "models")
    assert str(folder / "pytorch_model.bin") in _one_line(exc)
    _tiny_encoder_file(folder, extra="model.encoder.layers.4.fc1.bias")
    with pytest.raises(ModelFileError, match=r"1 unexpected"):
        load_whisper(tmp_path / "models")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "d_model": 512}))
    _tiny_encoder_file(folder)
    with pytest.raises(ModelFileError, match=r"wrong shape \(e\.g\. model\.encoder\.conv1\.weight \[384, 80, 3\]"):
        load_whisper(tmp_path / "models")
