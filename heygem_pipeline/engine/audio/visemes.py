"""Audio → mouth shapes: a 100 Hz track of mouth parameters that the viseme engine renders.

Parameters (columns of the track):
- ``open``: lip/jaw opening, 0 closed … 1 widest (an "ah");
- ``spread``: 0 neutral … 1 lips pulled wide (an "ee");
- ``round``: 0 neutral … 1 lips rounded and narrowed (an "oo", a "w");
- ``press``: 0 … 1 lips pressed together (m, b, p).

Two sources are combined. The acoustic path (any language, Chinese included) reads loudness and spectral
shape: opening follows the speech envelope, the F2 region tells spread from round. For English, phones from
PocketSphinx give each segment its viseme (shape, closures for m/b/p, teeth-on-lip for f/v); the acoustic
envelope still scales the opening, so the mouth moves exactly when the sound does. Silence always closes
the mouth: the acoustic gate wins over any phone.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

from heygem_pipeline.engine.audio.phonemes import PHONE_RATE, recognize_phones

PARAMS = ("open", "spread", "round", "press")
TRACK_RATE = PHONE_RATE  # 100 Hz, 10 ms
OPEN, SPREAD, ROUND, PRESS = range(4)

# Viseme targets per CMU phone: (open, spread, round, press). Values follow the usual Preston-Blair /
# Disney viseme groups; opening is later scaled by loudness.
VISEMES: dict[str, tuple[float, float, float, float]] = {
    "AA": (1.00, 0.10, 0.00, 0), "AE": (0.85, 0.45, 0.00, 0), "AH": (0.70, 0.15, 0.00, 0),
    "AO": (0.80, 0.00, 0.45, 0), "AW": (0.80, 0.00, 0.50, 0), "AY": (0.85, 0.35, 0.00, 0),
    "EH": (0.60, 0.45, 0.00, 0), "ER": (0.40, 0.00, 0.45, 0), "EY": (0.50, 0.55, 0.00, 0),
    "IH": (0.40, 0.55, 0.00, 0), "IY": (0.30, 0.80, 0.00, 0), "OW": (0.60, 0.00, 0.80, 0),
    "OY": (0.60, 0.00, 0.60, 0), "UH": (0.40, 0.00, 0.60, 0), "UW": (0.30, 0.00, 1.00, 0),
    "W": (0.15, 0.00, 1.00, 0), "R": (0.30, 0.00, 0.55, 0), "L": (0.40, 0.20, 0.00, 0),
    "Y": (0.30, 0.55, 0.00, 0), "HH": (0.50, 0.10, 0.00, 0),
    "M": (0.00, 0.00, 0.00, 1), "B": (0.00, 0.00, 0.00, 1), "P": (0.00, 0.00, 0.00, 1),
    "F": (0.12, 0.25, 0.00, 0), "V": (0.12, 0.25, 0.00, 0),
    "TH": (0.25, 0.20, 0.00, 0), "DH": (0.25, 0.20, 0.00, 0),
    "S": (0.15, 0.55, 0.00, 0), "Z": (0.15, 0.55, 0.00, 0),
    "SH": (0.25, 0.00, 0.65, 0), "ZH": (0.25, 0.00, 0.65, 0), "CH": (0.25, 0.00, 0.60, 0),
    "JH": (0.25, 0.00, 0.60, 0), "T": (0.25, 0.30, 0.00, 0), "D": (0.25, 0.30, 0.00, 0),
    "N": (0.25, 0.30, 0.00, 0), "K": (0.40, 0.20, 0.00, 0), "G": (0.40, 0.20, 0.00, 0),
    "NG": (0.35, 0.20, 0.00, 0),
}
ENGLISH = ("en", "en-us", "en-gb", "en-uk", "english")


def _acoustic(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per 10 ms frame: speech level 0..1, voice activity, spread cue 0..1, round cue 0..1."""
    hop = sample_rate // TRACK_RATE
    n_frames = int(np.ceil(len(samples) / hop))
    n_fft = 512
    padded = np.pad(samples.astype(np.float32), (n_fft // 2, n_fft // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)

    def band(lo: float, hi: float) -> np.ndarray:
        return spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-10

    speech_db = 10 * np.log10(band(100, 4000))
    loud = np.percentile(speech_db, 95)
    floor = max(np.percentile(speech_db, 10), loud - 55)
    # Level: 0 at 35 dB below the speech peak, 1 at the peak. Activity: 30 dB below peak and above the floor,
    # so background hiss and breaths never open the mouth.
    level = np.clip((speech_db - (loud - 35)) / 35, 0, 1)
    active = (speech_db > loud - 30) & (speech_db > floor + 6)
    # F2 region energy balance: high-front vowels (ee) carry energy 1.8–3 kHz, rounded vowels (oo, oh) under 1 kHz.
    high = band(1800, 3200)
    low = band(250, 1000)
    balance = 10 * np.log10(high / low)
    spread = np.clip((balance + 12) / 16, 0, 1)
    rounded = np.clip((-balance - 14) / 10, 0, 1)
    return level, active, spread, rounded


def speech_level(samples: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Per 10 ms frame: speech loudness 0 (35 dB under the speech peak) … 1 (the peak); how far the jaw opens."""
    return _acoustic(samples, sample_rate)[0]


PHONE_LEVEL_DB = -20.0  # speech peaks are brought to this level (dBFS RMS) before phone recognition


def _at_speech_level(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``samples`` scaled so that loud speech (the 95th percentile of 10 ms RMS) sits at ``PHONE_LEVEL_DB``.

    The recognizer's acoustic model expects a normal recording level: on a quiet voice (30 dB down) it hears
    fewer phones, and the mouth opened about a quarter less than on the same words at full level.
    """
    hop = sample_rate // TRACK_RATE
    usable = len(samples) // hop * hop
    if usable == 0:
        return samples
    rms = np.sqrt(np.mean(samples[:usable].astype(np.float64).reshape(-1, hop) ** 2, axis=1))
    loud = float(np.percentile(rms, 95))
    if loud < 1e-6:
        return samples
    gain = min(10 ** (PHONE_LEVEL_DB / 20) / loud, 1000.0)
    return np.clip(samples * gain, -1.0, 1.0).astype(np.float32)


def _phone_targets(samples: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Viseme targets per 10 ms frame from recognised phones, and a mask of frames a phone covers."""
    targets = np.zeros((n_frames, 4), dtype=np.float32)
    covered = np.zeros(n_frames, dtype=bool)
    for phone in recognize_phones(_at_speech_level(samples, 16000)):
        shape = VISEMES.get(phone.phone)
        if shape is None:
            continue  # SIL and noise fillers: the acoustic path decides
        start, end = phone.start, min(phone.end + 1, n_frames)
        targets[start:end] = shape
        covered[start:end] = True
    return targets, covered


def mouth_track(samples: np.ndarray, sample_rate: int = 16000, language: str = "en") -> np.ndarray:
    """A (T, 4) float32 track at 100 Hz of (open, spread, round, press) for the given audio."""
    level, active, spread_cue, round_cue = _acoustic(samples, sample_rate)
    n_frames = len(level)
    # Hold activity 60 ms after sound stops (releases, plosive tails), close in any longer pause.
    active = maximum_filter1d(active.astype(np.uint8), size=7, origin=3).astype(bool)
    active &= maximum_filter1d(active.astype(np.uint8), size=7, origin=-3).astype(bool)

    track = np.zeros((n_frames, 4), dtype=np.float32)
    track[:, OPEN] = level
    track[:, SPREAD] = spread_cue * 0.6
    track[:, ROUND] = round_cue * 0.6
    if language.lower() in ENGLISH:
        targets, covered = _phone_targets(samples, n_frames)
        shaped = targets[covered]
        # Phones give shape; loudness scales how far the jaw goes (a shouted "ah" opens wider).
        shaped[:, OPEN] *= 0.45 + 0.75 * level[covered]
        track[covered] = shaped
    track[:, OPEN] = np.clip(track[:, OPEN], 0, 1) * active
    track[~active, SPREAD:] = 0

    return coarticulate(track)


def coarticulate(track: np.ndarray) -> np.ndarray:
    """Viseme targets per 10 ms frame (T, 4) → the mouth track: neighbouring visemes blend over ~40 ms (a
    zero-phase smoothing: no lag), and a pressed closure (m/b/p) still reaches a closed mouth at its centre."""
    smooth = gaussian_filter1d(track, sigma=3.0, axis=0, mode="nearest")
    press = smooth[:, PRESS]
    smooth[:, OPEN] *= 1 - np.clip(press * 1.6, 0, 1)
    return smooth.astype(np.float32)


def _frame_times(indices: np.ndarray, fps: float) -> np.ndarray:
    # A frame shows the middle of its display interval, so sound and picture line up to the frame.
    return (np.asarray(indices, dtype=np.float64) + 0.5) / fps * TRACK_RATE


def sample_track(track: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Mouth parameters for each of ``n_frames`` output video frames: (n_frames, 4)."""
    times = _frame_times(np.arange(n_frames), fps)
    index = np.arange(len(track))
    return np.stack([np.interp(times, index, track[:, k]) for k in range(track.shape[1])], axis=1).astype(np.float32)


def mouth_at(track: np.ndarray, frame_index: int, fps: float) -> np.ndarray:
    """Mouth parameters (4,) for one output frame; the same sampling as ``sample_track``."""
    # Linear interpolation between the two nearest 10 ms rows, held at the ends (as np.interp does), without
    # np.interp's copy of whole columns: this runs once per rendered frame.
    time = float(_frame_times(np.array([frame_index]), fps)[0])
    last = len(track) - 1
    if time <= 0 or last <= 0:
        return track[0].astype(np.float32)
    if time >= last:
        return track[last].astype(np.float32)
    row = int(time)
    weight = time - row
    return (track[row] * (1 - weight) + track[row + 1] * weight).astype(np.float32)
