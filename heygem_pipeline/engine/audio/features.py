"""Per-script features the renderers read: the Wav2Lip Mel spectrogram, windows, save/load."""

from __future__ import annotations

import dataclasses
import io
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from heygem_pipeline.engine.media.files import atomic_output

ANALYSIS_RATE = 16000
DEFAULT_LANGUAGE = "en"
# Wav2Lip's hparams (FACTS.md). Changing any of them makes user-supplied weights useless.
MEL_N_FFT = 800
MEL_HOP = 200
MEL_WIN = 800
MEL_BANDS = 80
MEL_FMIN = 55.0
MEL_FMAX = 7600.0
MEL_PREEMPHASIS = 0.97
MEL_STEP = 16  # mel columns per video frame window
MEL_COLUMNS_PER_SECOND = ANALYSIS_RATE // MEL_HOP  # 80
StftPadMode = Literal["constant", "edge", "linear_ramp", "reflect", "symmetric", "empty"]  # what librosa.stft pads with
# The reference formula (FACTS.md) is librosa's centred STFT with its defaults, which pad with zeros
# ("constant") since librosa 0.9. Wav2Lip itself was trained under librosa 0.7, which padded by reflection;
# the two differ only in the first and last two columns (25 ms at each end). `pad_mode="reflect"` gives the
# librosa-0.7 edges for anyone who needs them bit for bit.
MEL_PAD_MODE: StftPadMode = "constant"


@dataclass(frozen=True)
class ScriptFeatures:
    """Everything an engine may need about the voice, computed once per script and cached."""

    samples: np.ndarray  # 16 kHz mono float32
    mel: np.ndarray  # (80, T) Wav2Lip mel, 80 columns per second
    sample_rate: int = 16000
    language: str = "en"
    text: str | None = None
    visemes: np.ndarray | None = None  # (T, 4) mouth track at 100 Hz (see engine.audio.visemes)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa  # lazy: importing the package must stay cheap

    # Keywords only: positional sr/n_fft broke in librosa 0.10. Default norm="slaney", htk=False = Wav2Lip's.
    basis = librosa.filters.mel(sr=ANALYSIS_RATE, n_fft=MEL_N_FFT, n_mels=MEL_BANDS, fmin=MEL_FMIN, fmax=MEL_FMAX)
    basis.setflags(write=False)  # shared by every caller through the cache
    return basis


def wav2lip_mel(samples: np.ndarray, *, pad_mode: StftPadMode = MEL_PAD_MODE) -> np.ndarray:
    """Wav2Lip's normalized log-Mel spectrogram of 16 kHz mono audio: (80, 1 + len // 200) float32 in [-4, 4]."""
    import librosa
    from scipy.signal import lfilter

    wav = np.asarray(samples, dtype=np.float64)
    if wav.ndim != 1 or wav.size < 2:
        raise ValueError(f"expected mono samples (at least 2), got shape {wav.shape}")
    emphasized = lfilter([1.0, -MEL_PREEMPHASIS], [1.0], wav)
    spectrum = librosa.stft(y=emphasized, n_fft=MEL_N_FFT, hop_length=MEL_HOP, win_length=MEL_WIN, window="hann",
                            center=True, pad_mode=pad_mode)
    mel = np.dot(_mel_basis(), np.abs(spectrum))
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0  # min level -100 dB, ref level 20 dB
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0).astype(np.float32)


def frame_count(duration_s: float, fps: float) -> int:
    """Output frames needed to cover the whole audio: ceil(duration * fps), immune to float noise (2.0*25)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(0, math.ceil(round(duration_s * fps, 6)))


def _starts(indices: np.ndarray, fps: float, n_mel_columns: int) -> np.ndarray:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # Same float operations as the reference (int(i * (80. / fps))), so chunk boundaries match it bit for bit.
    starts = (np.asarray(indices, dtype=np.int64) * (float(MEL_COLUMNS_PER_SECOND) / fps)).astype(np.int64)
    # Past the end, frames get the last 16 columns (the reference stops there; we must cover the whole audio).
    return np.clip(starts, 0, max(n_mel_columns - MEL_STEP, 0))


def mel_chunk_starts(n_frames: int, fps: float, n_mel_columns: int) -> np.ndarray:
    """First mel column of each output frame's 16-column window, clamped to the last full window."""
    return _starts(np.arange(n_frames), fps, n_mel_columns)


def _padded(mel: np.ndarray) -> np.ndarray:
    if mel.ndim != 2:
        raise ValueError(f"expected a (bands, T) mel, got shape {mel.shape}")
    if mel.shape[1] < MEL_STEP:  # shorter than one window: repeat the last column
        if mel.shape[1] == 0:
            raise ValueError("empty mel")
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), mode="edge")
    return mel


def mel_chunk_batch(mel: np.ndarray, indices: np.ndarray | list[int], fps: float) -> np.ndarray:
    """The (80, 16) windows for the given output frame indices: (len(indices), 80, 16), a copy."""
    mel = _padded(mel)
    starts = _starts(np.asarray(indices), fps, mel.shape[1])
    windows = np.lib.stride_tricks.sliding_window_view(mel, MEL_STEP, axis=1)  # (80, T-15, 16), no copy
    return np.ascontiguousarray(windows[:, starts].transpose(1, 0, 2))


def mel_chunks(mel: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Windows for output frames 0..n_frames-1: (n_frames, 80, 16). For long scripts prefer mel_chunk_batch."""
    return mel_chunk_batch(mel, np.arange(n_frames), fps)


def mel_chunk(mel: np.ndarray, index: int, fps: float) -> np.ndarray:
    """The (80, 16) window for output frame ``index``."""
    return mel_chunk_batch(mel, [index], fps)[0]


def script_features(samples: np.ndarray, *, language: str = DEFAULT_LANGUAGE, text: str | None = None
                    ) -> ScriptFeatures:
    """Features for 16 kHz mono samples (e.g. ``load_analysis(intake.analysis_wav)``)."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    return ScriptFeatures(samples=samples, mel=wav2lip_mel(samples), sample_rate=ANALYSIS_RATE, language=language,
                          text=text)


_FEATURES_FORMAT = 1


def save_features(path: str | os.PathLike[str], features: ScriptFeatures) -> None:
    """Write features as an .npz, atomically; every dataclass field round-trips, including ones added later.

    Arrays are stored as they are, scalars and strings as 0-d arrays (no pickle), None values by name.
    """
    arrays: dict[str, np.ndarray] = {"__format__": np.array(_FEATURES_FORMAT)}
    nones: list[str] = []
    for spec in dataclasses.fields(features):
        value = getattr(features, spec.name)
        if value is None:
            nones.append(spec.name)
        else:
            arrays[spec.name] = np.asarray(value)
    arrays["__none__"] = np.array(nones, dtype=str)
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:  # a file object: numpy adds no ".npz"
        np.savez(handle, **arrays)


def load_features(path: str | os.PathLike[str], *, cls: type[ScriptFeatures] = ScriptFeatures) -> ScriptFeatures:
    """Read features written by ``save_features`` into ``cls``'s fields; missing optional fields take defaults.

    Stored fields ``cls`` does not have (a cache from a newer version) are ignored.
    """
    with open(path, "rb") as handle, np.load(io.BytesIO(handle.read()), allow_pickle=False) as data:
        stored = {key: data[key] for key in data.files}
    if int(stored.pop("__format__", -1)) != _FEATURES_FORMAT:
        raise ValueError(f"{path}: not a feature cache of format {_FEATURES_FORMAT}; recompute it")
    nones = {str(name) for name in stored.pop("__none__", np.array([], dtype=str))}
    kwargs: dict[str, Any] = {}  # as stored: arrays, scalars, strings, None
    for spec in dataclasses.fields(cls):
        if spec.name in nones:
            kwargs[spec.name] = None
        elif spec.name in stored:
            value = stored[spec.name]
            # 0-d arrays were scalars or strings; anything with dimensions is a real array.
            kwargs[spec.name] = value.item() if value.ndim == 0 else value
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path}: feature cache lacks {spec.name!r}; recompute it")
    return cls(**kwargs)
