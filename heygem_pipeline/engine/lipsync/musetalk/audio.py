"""MuseTalk 1.5's audio path: 16 kHz voice → Whisper log-mel → whisper-tiny hidden states → one audio prompt
``[50, 384]`` per video frame (the UNet's cross-attention input, before the positional encoding).

The arithmetic is the reference's (``musetalk/utils/audio_processor.py`` with transformers' WhisperFeatureExtractor
on its torch path), step by step:

- the voice is cut into 30 s segments of 480,000 samples; each is zero-padded to full length and gets its own
  STFT, its own ``max`` for the 80 dB floor and its own encoder pass (1500 frames at 50 per second);
- log-mel: ``torch.stft(n_fft=400, hop=160, hann(400), center, reflect)``, power ``|X|²`` without the last frame,
  80 slaney mel filters (slaney scale and norm, 0–8000 Hz, computed in float64, used as float32),
  ``log10(clamp 1e-10)``, ``max(x, x.max() − 8)``, ``(x + 4) / 4`` → ``[80, 3000]`` per segment;
- the segments' hidden states ``[1, 1500, 5, 384]`` are concatenated and kept to ``floor(len / 16000 · 50)`` frames;
- prompts: 2·⌈50/fps⌉ zero frames in front, 6·⌈50/fps⌉ behind (4 and 12 at 25 fps); video frame ``i`` takes the 10
  frames from ``floor(i · 50/fps)`` → ``[10, 5, 384]`` → ``[50, 384]`` (token = 5·time + layer). There are
  ``floor(len / 16000 · fps)`` video frames (``fps`` taken as ``int(fps)``, as the reference does).

Memory, for long voices: the log-mel and the encoder run one 30 s segment at a time (about 60 MB of working memory
for whisper-tiny on the CPU, whatever the voice's length); what is kept is the hidden states, written in place into
one tensor of 384 KB per second of voice (23 MB a minute; measured: a 5-minute voice peaks at 173 MB above the
loaded encoder, 110 MB of it the result, 14 s on 2 CPU threads). The prompts repeat every hidden frame five
times (77 KB per video frame, 115 MB a minute at 25 fps), so long voices should take them a batch at a time with
``audio_prompts(..., start=, stop=)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch

from heygem_pipeline.errors import InputError

from .whisper import WhisperEncoder

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 30 * SAMPLE_RATE  # 480,000: one whisper window
N_FFT = 400
HOP = 160
N_MELS = 80
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
MEL_FRAMES = SEGMENT_SAMPLES // HOP  # 3000
LOG_FLOOR_DB = 8.0  # log10 units below the segment's maximum (80 dB)
WHISPER_FPS = 50  # encoder frames per second
PAD_LEFT = 2  # the reference's audio_padding_length_left / _right (video frames of context each side)
PAD_RIGHT = 2
PROMPT_WINDOW = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # 10 whisper frames per video frame


def read_wave_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """The voice as the reference reads it (``librosa.load(path, sr=16000)``): float32 samples, channels averaged,
    resampled with soxr-HQ when the file is not 16 kHz (a 16 kHz file's samples are returned as stored)."""
    import soundfile  # lazy: importing the package must stay cheap

    if not os.path.isfile(path):
        raise InputError(path, "voice file not found", "check the path")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError... for unreadable audio
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(path, f"cannot read the voice as audio ({reason})", "convert it to a WAV file") from exc
    wave = samples.T.mean(axis=0) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        import librosa

        wave = librosa.resample(wave, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(wave, dtype=np.float32)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """80 slaney mel filters over the 201 FFT bins (slaney scale and area norm, 0–8000 Hz), float64 ``[201, 80]``."""
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(MEL_FMIN), _hz_to_mel(MEL_FMAX), N_MELS + 2)
    edges = _mel_to_hz(mel_points)  # 82 corner frequencies, Hz
    gaps = np.diff(edges)
    offsets = edges[None, :] - fft_freqs[:, None]  # [201, 82]
    rising = -offsets[:, :-2] / gaps[:-1]
    falling = offsets[:, 2:] / gaps[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (edges[2:] - edges[:-2])[None, :]  # slaney norm: each triangle has unit area
    filters.setflags(write=False)
    return filters


_MIN_LOG_HZ = 1000.0  # slaney: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
_MIN_LOG_MEL = 15.0
_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)  # 27 mels per factor 6.4 (1 kHz to 6.4 kHz)


def _hz_to_mel(hz: float) -> float:
    if hz < _MIN_LOG_HZ:
        return 3.0 * hz / 200.0
    return float(_MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) * _MELS_PER_LOG_HZ)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = 200.0 * mels / 3.0
    high = mels >= _MIN_LOG_MEL
    hz[high] = _MIN_LOG_HZ * np.exp((mels[high] - _MIN_LOG_MEL) * (np.log(6.4) / 27.0))
    return hz


def _as_wave(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    samples = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
    samples = samples.detach().to("cpu", torch.float32)
    if samples.dim() != 1 or samples.numel() == 0:
        raise ValueError(f"expected a non-empty 1-D 16 kHz waveform, got shape {tuple(samples.shape)}")
    return samples


def _segments(wave: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, wave.numel(), SEGMENT_SAMPLES):
        yield wave[start : start + SEGMENT_SAMPLES]


def _segment_log_mel(segment: torch.Tensor) -> torch.Tensor:
    """One ≤ 30 s segment → its Whisper log-mel ``[1, 80, 3000]``."""
    padded = torch.zeros(1, SEGMENT_SAMPLES, dtype=torch.float32)
    padded[0, : segment.numel()] = segment
    spectrum = torch.stft(padded, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                          return_complex=True)
    power = spectrum[..., :-1].abs() ** 2  # [1, 201, 3000]
    mel = torch.tensor(mel_filters(), dtype=torch.float32).T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - LOG_FLOOR_DB)
    return (log_spec + 4.0) / 4.0


def log_mel(wave_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper log-mel of every 30 s segment, float32 ``[n_segments, 80, 3000]`` (one segment per started 30 s)."""
    return torch.cat([_segment_log_mel(seg) for seg in _segments(_as_wave(wave_16k))])


def feature_count(wave_len: int) -> int:
    """Encoder frames the reference keeps for a voice of ``wave_len`` samples: ``floor(len / 16000 · 50)``."""
    return math.floor(wave_len / SAMPLE_RATE * WHISPER_FPS)


def prompt_count(wave_len: int, fps: float = 25) -> int:
    """Video frames (audio prompts) for a voice of ``wave_len`` samples: ``floor(len / 16000 · int(fps))``."""
    return math.floor(wave_len / SAMPLE_RATE * int(fps))


@torch.no_grad()
def whisper_features(encoder: WhisperEncoder, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """All hidden states of the voice, float32 ``[1, floor(len/16000·50), 5, 384]`` on the CPU.

    Each 30 s segment is turned into its log-mel and encoded on its own (on the encoder's device), so the peak
    memory does not grow with the voice's length; only the kept hidden states do (384 KB per second).
    """
    samples = _as_wave(wave)
    device = next(encoder.parameters()).device
    cfg = encoder.config
    kept = feature_count(samples.numel())
    out = torch.empty(1, kept, cfg.encoder_layers + 1, cfg.d_model)  # filled in place: no second copy at the end
    per_segment = cfg.max_source_positions
    for index, segment in enumerate(_segments(samples)):
        first = index * per_segment
        if first < kept:
            hidden = encoder(_segment_log_mel(segment).to(device))
            out[:, first : first + per_segment] = hidden[:, : kept - first].to("cpu", torch.float32)
    return out


def audio_prompts(features: torch.Tensor, wave_len: int, fps: float = 25, *, start: int = 0,
                  stop: int | None = None) -> torch.Tensor:
    """The audio prompt of each video frame, float32 ``[T, 50, 384]`` (before the positional encoding).

    ``features``: ``whisper_features``' output (``[1, frames, layers, dim]``; longer inputs are cut to
    ``floor(wave_len/16000·50)`` frames as the reference does); ``wave_len``: the voice's length in samples, which
    sets ``T = floor(wave_len/16000·int(fps))``. ``start``/``stop`` select video frames ``[start, stop)`` of those T
    (clamped), so a long voice's prompts can be made one batch at a time with the same values.
    """
    rate = int(fps)
    if rate <= 0:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if features.dim() != 4 or features.shape[0] != 1:
        raise ValueError(f"expected features [1, frames, layers, dim], got {tuple(features.shape)}")
    step = WHISPER_FPS / rate  # whisper frames per video frame
    pad = math.ceil(step)
    kept = features[0, : feature_count(wave_len)].to(torch.float32)
    zeros = kept.new_zeros((1, *kept.shape[1:]))
    padded = torch.cat([zeros.expand(pad * PAD_LEFT, -1, -1), kept, zeros.expand(pad * 3 * PAD_RIGHT, -1, -1)])
    total = prompt_count(wave_len, fps)
    stop = total if stop is None else min(stop, total)
    start = max(0, min(start, stop))
    first = torch.tensor([math.floor(i * step) for i in range(start, stop)], dtype=torch.long)
    window = first[:, None] + torch.arange(PROMPT_WINDOW)  # [T, 10]
    if window.numel() and int(window.max()) >= padded.shape[0]:
        raise ValueError(f"features hold {kept.shape[0]} frames, too few for {total} video frames at {rate} fps")
    clips = padded[window]  # [T, 10, layers, dim]
    return clips.reshape(clips.shape[0], -1, clips.shape[-1])
