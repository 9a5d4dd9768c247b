"""Quality measurement of rendered videos: audio-visual sync, measured on the output itself.

The mouth aperture (inner-lip gap over face height, from the face mesh) of output frames is compared with the
loudness of the output's own audio in each frame's interval. Speech opens the mouth, so the two series correlate;
the lag of the strongest correlation is the A/V offset in frames, and its value the confidence. Nothing from the
render is trusted: this reads the delivered file, as a viewer would see and hear it. The offset of a muxed file is
one number for its whole length, so the picture is measured on the ``SAMPLE_SECONDS`` that hold the most speech
(the face mesh on every frame is most of a check's cost); the audio and the frame count cover the whole file.

The verdicts on a measured video live here too (``video_verdicts``): a lag needs enough speech to be found, so a
clip with little of it (a short greeting, a phrase and then silence) is reported as not measurable and passes
with that note instead of failing on a lag that the data cannot determine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import find_peaks

from heygem_pipeline.engine.audio.features import ANALYSIS_RATE
from heygem_pipeline.engine.audio.intake import decode_audio
from heygem_pipeline.engine.face.landmarks import face_height
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.face.tracker import thread_tracker
from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.media.probe import MediaInfo, probe

MAX_LAG_FRAMES = 5
MAX_SYNC_OFFSET_FRAMES = 1
# The offset is only meaningful when mouth and voice correlate at all: a mouth that never moves gives no lag.
MIN_SYNC_CONFIDENCE = 0.1
MIN_FACE_COVERAGE = 0.8
# Speech a lag can be measured on: frames within SPEECH_RANGE_DB of the loudest (and above SPEECH_FLOOR_DB), at
# least MIN_SPEECH_S in all and in at least MIN_SPEECH_BURSTS separate bursts (syllables, words). With less, the
# correlation is one step up and one step down, and its peak may sit anywhere within the ramps' width.
SPEECH_RANGE_DB = 30.0
SPEECH_FLOOR_DB = -70.0
MIN_SPEECH_S = 2.0
MIN_SPEECH_BURSTS = 6
SILENCE_BELOW_DB = 40.0  # loudness is floored this far under the peak: room noise in pauses is not a signal
SAMPLE_SECONDS = 8.0
CROP_MARGIN = 1.6  # measured crop side = this × the larger side of the box the template's face moves in
CROP_SIDE = 256  # pixels of the measured crop: the face mesh sees 192 px anyway


@dataclass(frozen=True)
class SyncReport:
    offset_frames: int  # > 0: the mouth moves after the sound; < 0: before it
    confidence: float  # Pearson correlation at that offset (-1..1); clearly positive for good sync
    frames: int  # the video's, all of them
    fps: float
    face_coverage: float  # share of the measured frames where the face mesh found the face
    audio_duration_s: float  # the audio stream's declared duration (0 when it has none)
    aperture: np.ndarray = field(repr=False)  # per measured frame, share of face height (nan where no face)
    loudness_db: np.ndarray = field(repr=False)  # per measured frame
    first_frame: int = 0  # the measured frames are first_frame, first_frame + 1, …
    speech_s: float = 0.0  # seconds of speech the lag was measured on
    speech_bursts: int = 0  # separate stretches of speech (syllables, words) among them

    @property
    def measurable(self) -> bool:
        """Whether there is enough speech for the lag to mean anything."""
        return self.speech_s >= MIN_SPEECH_S and self.speech_bursts >= MIN_SPEECH_BURSTS

    def as_metadata(self) -> dict[str, float | int | bool]:
        return {"sync_offset_frames": self.offset_frames, "sync_confidence": round(self.confidence, 3),
                "sync_measurable": self.measurable, "speech_s": round(self.speech_s, 2),
                "output_face_coverage": round(self.face_coverage, 3)}


def mouth_apertures(video: str | os.PathLike[str], region: tuple[int, int, int] | None = None,
                    info: MediaInfo | None = None, frames: slice | None = None) -> tuple[np.ndarray, float]:
    """Inner-lip gap / face height for every frame of ``video`` (nan where no face), and the video's fps.

    ``region=(left, top, side)``: measure only that square of each frame (see ``face_region``); ``info``: the
    video's probe, when the caller has it; ``frames``: only these (a ``slice(start, stop)`` of frame indices).
    """
    info = info or probe(video)
    if info.video is None:
        raise ValueError(f"{video}: no video stream to measure")
    width: int | None = info.video.width
    height: int | None = info.video.height
    if info.video.rotation in (90, 270):
        width = height = None  # the reader works out the turned size itself
    crop: tuple[int, int, int, int] | None = None
    scale_to: tuple[int, int] | None = None
    if region is not None:
        left, top, side = region
        crop = (left, top, side, side)  # with the size above, so the reader need not probe again
        if side > CROP_SIDE:
            scale_to = (CROP_SIDE, CROP_SIDE)
    start_frame, max_frames, fps = 0, None, None  # FrameReader's defaults: the whole video
    if frames is not None:
        start_frame, max_frames, fps = frames.start, frames.stop - frames.start, info.video.fps
    values: list[float] = []
    tracker = thread_tracker()
    # One decoder thread: checks run beside renders and preparation, where total CPU time is what counts.
    with FrameReader(video, width, height, start_frame=start_frame, max_frames=max_frames, fps=fps, crop=crop,
                     scale_to=scale_to, threads=1) as reader:
        for frame in reader:
            face = tracker.process(frame)
            if not face.found:
                values.append(np.nan)
                continue
            gap = float(np.linalg.norm(face.landmarks[14, :2] - face.landmarks[13, :2]))
            values.append(gap / max(float(face_height(face.landmarks[None])[0]), 1.0))
    return np.asarray(values, dtype=np.float64), info.video.fps


def frame_loudness(samples: np.ndarray, n_frames: int, fps: float, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """RMS level in dB of each frame's interval of audio (floored at -80 dB)."""
    edges = np.round(np.arange(n_frames + 1) / fps * rate).astype(np.int64)
    levels = np.full(n_frames, -80.0)
    for i in range(n_frames):
        chunk = samples[edges[i]: edges[i + 1]]
        if chunk.size:
            levels[i] = max(-80.0, 10 * np.log10(float(np.mean(chunk.astype(np.float64) ** 2)) + 1e-12))
    return levels


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nanmean(x) if np.isfinite(x).any() else 0.0)
    std = x.std()
    return (x - x.mean()) / std if std > 1e-9 else np.zeros_like(x)


def best_lag(aperture: np.ndarray, loudness: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> tuple[int, float]:
    """Lag (frames the mouth trails the sound) with the highest correlation, and that correlation."""
    a, b = _zscore(aperture), _zscore(loudness)
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            x, y = a[lag:], b[: len(b) - lag]
        else:
            x, y = a[:lag], b[-lag:]
        if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-9:
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best


def sample_window(speech: np.ndarray, length: int) -> slice:
    """The ``length`` consecutive frames holding the most speech (the first such), or all frames when fewer."""
    if len(speech) <= length:
        return slice(0, len(speech))
    start = int(np.argmax(np.convolve(speech.astype(np.int64), np.ones(length, np.int64), "valid")))
    return slice(start, start + length)


def speech_frames(loudness: np.ndarray) -> np.ndarray:
    """Frames that carry speech: within ``SPEECH_RANGE_DB`` of the loudest, and above ``SPEECH_FLOOR_DB``."""
    if len(loudness) == 0:
        return np.zeros(0, bool)
    return loudness > max(float(loudness.max()) - SPEECH_RANGE_DB, SPEECH_FLOOR_DB)


def speech_bursts(loudness: np.ndarray, dip_db: float = 6.0) -> int:
    """Separate stretches of speech (syllables, words): loudness peaks in speech frames standing ``dip_db`` over
    the valleys on either side (pauses count as deep valleys)."""
    speech = speech_frames(loudness)
    if not speech.any():
        return 0
    level = np.where(speech, loudness, float(loudness[speech].min()) - dip_db)
    peaks, _ = find_peaks(np.concatenate([[level.min()], level, [level.min()]]), prominence=dip_db)
    return len(peaks)


def face_region(track: FaceTrack) -> tuple[int, int, int] | None:
    """The square ``(left, top, side)`` the template's face moves in, with margin; None when it would not be
    much smaller than the frame. Measuring that region (scaled down to ``CROP_SIDE`` when larger) gives the same
    apertures as the full frame at a fraction of the cost (less to convert and copy, a smaller image for the
    detector); ffmpeg crops it while decoding."""
    usable = track.usable()
    if not usable.any():
        return None
    boxes = track.boxes[usable]
    x0, y0, x1, y1 = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    side = int(max(x1 - x0, y1 - y0) * CROP_MARGIN) // 2 * 2
    if side <= 0 or side > min(track.width, track.height) * 0.8:
        return None
    left = int(min(max(0.0, (x0 + x1 - side) / 2), track.width - side)) // 2 * 2
    top = int(min(max(0.0, (y0 + y1 - side) / 2), track.height - side)) // 2 * 2
    return left, top, side


def measure_sync(video: str | os.PathLike[str], face_track: FaceTrack | None = None) -> SyncReport:
    """Measure the A/V offset of a rendered video from its own picture and sound.

    With the avatar's ``face_track``, only the region where the face moves is measured (same result, cheaper).
    """
    info = probe(video)
    if info.video is None:
        raise ValueError(f"{video}: no video stream to measure")
    fps = info.video.fps
    total = info.video.frame_count or round((info.video.duration or info.duration or 0.0) * fps)
    samples = decode_audio(Path(video), info)
    everything = frame_loudness(samples, total, fps)
    sample = sample_window(speech_frames(everything), round(SAMPLE_SECONDS * fps))
    region = None if face_track is None else face_region(face_track)
    aperture, fps = mouth_apertures(video, region, info, sample)
    loudness = everything[sample][: len(aperture)]
    speech = speech_frames(loudness)
    # Correlate over the spoken part (and the lag window around it), with pauses at one floor level: long leading
    # or trailing silence and its noise would otherwise weigh as much as the speech itself.
    window = slice(0, 0)
    if speech.any():
        first, last = np.flatnonzero(speech)[[0, -1]]
        window = slice(max(int(first) - 2 * MAX_LAG_FRAMES, 0), int(last) + 2 * MAX_LAG_FRAMES + 1)
    floored = np.maximum(loudness, float(loudness.max(initial=-80.0)) - SILENCE_BELOW_DB)
    offset, confidence = best_lag(aperture[window], floored[window])
    coverage = float(np.isfinite(aperture).mean()) if len(aperture) else 0.0
    audio_s = info.audio.duration if info.audio and info.audio.duration else 0.0
    return SyncReport(offset_frames=offset, confidence=confidence, frames=total, fps=fps,
                      face_coverage=coverage, audio_duration_s=audio_s, aperture=aperture, loudness_db=loudness,
                      first_frame=sample.start, speech_s=float(speech.sum()) / fps if fps else 0.0,
                      speech_bursts=speech_bursts(loudness))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str  # one line for a person: what was measured


def sync_verdict(report: SyncReport) -> Verdict:
    """Lag within ±1 frame with positive correlation; a clip with too little speech passes with a note."""
    measured = f"offset {report.offset_frames:+d} frames, confidence {report.confidence:.2f}"
    if not report.measurable:
        return Verdict(True, f"not enough speech to measure ({report.speech_s:.1f} s in {report.speech_bursts} "
                             f"bursts; at least {MIN_SPEECH_S:g} s in {MIN_SPEECH_BURSTS} needed): not checked")
    ok = abs(report.offset_frames) <= MAX_SYNC_OFFSET_FRAMES and report.confidence >= MIN_SYNC_CONFIDENCE
    return Verdict(ok, measured)


def duration_verdict(report: SyncReport, voice_s: float, fps: float) -> Verdict:
    """Video and audio both last as long as the voice, within one frame (plus a millisecond of rounding)."""
    frame = 1.0 / fps
    video_s = report.frames / fps
    audio_s = report.audio_duration_s
    ok = abs(video_s - voice_s) <= frame + 1e-3 and abs(audio_s - voice_s) <= frame + 1e-3
    return Verdict(ok, f"video {video_s:.3f} s, audio {audio_s:.3f} s, voice {voice_s:.3f} s")


def face_verdict(report: SyncReport) -> Verdict:
    return Verdict(report.face_coverage >= MIN_FACE_COVERAGE, f"face in {report.face_coverage:.0%} of frames")
