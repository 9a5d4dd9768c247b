"""Face tracking of presenter templates: 478 MediaPipe landmarks per frame, smoothed, gap-filled, saved as Parquet.

Measured facts behind the design (see shared/reference/mediapipe/NOTES.md): FaceMesh's built-in detector is the
short-range one and misses presenter-sized faces in 720p frames, so the full-range ``FaceDetection`` locates the
face and the mesh runs on a square crop ≈2.2× the face. The next frame's crop follows the landmarks, so the detector
runs only to (re)acquire the face and for a cheap periodic check (about once a second) that the track still sits on
a face — and, with several people in the picture, on the same one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.face.landmarks import LANDMARK_COUNT, FaceFrame, _landmark_box, face_height
from heygem_pipeline.engine.face.tracker import FaceTracker, _Detection, thread_tracker
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.errors import HeygemError, NoFaceError, TooShortError
from heygem_pipeline.settings import ToolLimits

FACE_TRACK_SCHEMA_VERSION = "1"
NO_FACE_FIX = "upload a template where the presenter's face is visible and frontal in most frames"
ProgressCallback = Callable[[int, "int | None"], None]


class FaceTrackFormatError(HeygemError, ValueError):
    """A saved face track that this version cannot read (another schema version, or not a face track)."""


class OneEuroFilter:
    """The One-Euro filter (Casiez et al. 2012), vectorised over arrays of any shape.

    A low-pass filter whose cutoff rises with the signal's speed: strong smoothing while a coordinate is still
    (jitter goes) and little while it moves (no lag). ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how
    fast the cutoff grows with speed (per unit of the signal per second), ``d_cutoff`` (Hz) smooths the speed.
    """

    def __init__(self, freq: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if freq <= 0:
            raise ValueError("freq must be positive")
        self.freq, self.min_cutoff, self.beta, self.d_cutoff = float(freq), min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: float | np.ndarray, freq: float) -> float | np.ndarray:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * freq)

    def reset(self) -> None:
        self._x = self._dx = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter the next sample (same shape every call); returns float64."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return self._x.copy()
        assert self._dx is not None
        dx = (x - self._x) * self.freq
        self._dx += self._alpha(self.d_cutoff, self.freq) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x += self._alpha(cutoff, self.freq) * (x - self._x)
        return self._x.copy()


def smooth_sequence(values: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
                    d_cutoff: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """One-Euro over axis 0, run forwards and backwards and averaged.

    Offline we see the whole clip, so the backward pass's lead cancels the forward pass's lag: moving landmarks
    stay where the face is while the jitter is still filtered. Works in the input's dtype with one extra array
    (``out`` may be ``values`` itself), so smoothing a long track costs one copy of it, not four.
    """
    values = np.asarray(values)
    if len(values) < 3:
        result = values.copy() if out is None else out
        result[...] = values
        return result
    forward = np.empty_like(values)
    filt = OneEuroFilter(fps, min_cutoff, beta, d_cutoff)
    for i in range(len(values)):
        forward[i] = filt(values[i])
    filt.reset()
    result = forward if out is None else out
    # Backwards, each step reads values[i] before (possibly) overwriting it in ``out``.
    for i in range(len(values) - 1, -1, -1):
        result[i] = (forward[i] + filt(values[i])) / 2.0
    return result


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D bool array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@dataclass(eq=False)  # numpy arrays have no single truth value; compare the arrays themselves
class FaceTrack:
    """Per-frame face observations of one avatar video; the artefact the renderer reads.

    ``found``: the tracker saw the face in that frame. ``interpolated``: a short gap (≤ ``max_gap_frames``) filled
    linearly between found frames (or held from the nearest found frame at the clip's ends). Frames that are
    neither hold the nearest found frame's landmarks so consumers always have a position, but ``frame(i)`` reports
    them as not found. Coordinates are pixels of the ``width``×``height`` video.
    """

    found: np.ndarray  # (N,) bool
    interpolated: np.ndarray  # (N,) bool
    confidence: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1
    landmarks: np.ndarray  # (N, 478, 3) float32
    width: int
    height: int
    fps: float
    max_gap_frames: int = 12
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = len(self.found)
        self.found = np.asarray(self.found, bool)
        self.interpolated = np.asarray(self.interpolated, bool)
        self.confidence = np.asarray(self.confidence, np.float32)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(n, 4)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(n, LANDMARK_COUNT, 3)
        if not len(self.interpolated) == len(self.confidence) == n:
            raise ValueError("face track arrays differ in length")

    def __len__(self) -> int:
        return len(self.found)

    def usable(self) -> np.ndarray:
        """Frames whose landmarks can be rendered on: found or interpolated."""
        return self.found | self.interpolated

    def frame(self, index: int) -> FaceFrame:
        """The face in frame ``index``; interpolated frames count as found (their landmarks are good enough)."""
        return FaceFrame(
            found=bool(self.found[index] or self.interpolated[index]),
            box=self.boxes[index],
            landmarks=self.landmarks[index],
            confidence=float(self.confidence[index]),
        )

    def summary(self) -> dict:
        n = len(self)
        heights = face_height(self.landmarks[self.found]) if self.found.any() else np.zeros(0)
        gaps = _runs(~self.found)
        flagged = [
            {"start": a, "stop": b, "frames": b - a, "seconds": round((b - a) / self.fps, 3)}
            for a, b in _runs(~self.usable())
        ]
        return {
            "frames": n,
            "coverage": round(float(self.found.mean()) if n else 0.0, 4),
            "interpolated_frames": int(self.interpolated.sum()),
            "mean_face_height_px": round(float(heights.mean()), 2) if len(heights) else 0.0,
            "longest_gap_frames": max((b - a for a, b in gaps), default=0),
            "flagged_gaps": flagged,
        }

    # -- persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as Parquet (one row per frame), atomically, with the schema version and summary as metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(self)
        flat = pa.array(self.landmarks.reshape(-1), type=pa.float32())
        columns = {
            "frame": pa.array(np.arange(n, dtype=np.int32)),
            "found": pa.array(self.found),
            "interpolated": pa.array(self.interpolated),
            "confidence": pa.array(self.confidence, type=pa.float32()),
            **{name: pa.array(self.boxes[:, i], type=pa.float32()) for i, name in enumerate(("x0", "y0", "x1", "y1"))},
            "landmarks": pa.FixedSizeListArray.from_arrays(flat, LANDMARK_COUNT * 3),
        }
        metadata = {
            "schema_version": FACE_TRACK_SCHEMA_VERSION,
            "width": str(self.width),
            "height": str(self.height),
            "fps": repr(float(self.fps)),
            "max_gap_frames": str(self.max_gap_frames),
            "source": self.source,
            "summary": json.dumps(self.summary()),
        }
        table = pa.table(columns).replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
        path = Path(path)
        with atomic_output(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaceTrack:
        """Read a track written by ``save``; a file of another schema version raises ``FaceTrackFormatError``."""
        import pyarrow.parquet as pq

        path = Path(path)
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:
            raise FaceTrackFormatError(f"{path}: not a readable face track ({error}); run face tracking again") \
                from error
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        version = metadata.get("schema_version")
        if version != FACE_TRACK_SCHEMA_VERSION:
            raise FaceTrackFormatError(
                f"{path}: face track schema version {version!r}, this code reads {FACE_TRACK_SCHEMA_VERSION!r}; "
                "delete it and run face tracking again")
        n = table.num_rows
        landmarks = table.column("landmarks").combine_chunks()
        values = landmarks.flatten().to_numpy(zero_copy_only=False) if n else np.zeros(0, np.float32)
        if values.size != n * LANDMARK_COUNT * 3:
            raise FaceTrackFormatError(f"{path}: landmark column has the wrong size; run face tracking again")

        def col(name: str) -> np.ndarray:
            return table.column(name).to_numpy(zero_copy_only=False)

        return cls(
            found=col("found").astype(bool),
            interpolated=col("interpolated").astype(bool),
            confidence=col("confidence").astype(np.float32),
            boxes=np.stack([col(name) for name in ("x0", "y0", "x1", "y1")], axis=1).astype(np.float32).reshape(n, 4),
            landmarks=values.astype(np.float32).reshape(n, LANDMARK_COUNT, 3),
            width=int(metadata["width"]),
            height=int(metadata["height"]),
            fps=float(metadata["fps"]),
            max_gap_frames=int(metadata.get("max_gap_frames", 12)),
            source=metadata.get("source", ""),
        )


# Smoothing in face heights (so the same settings fit 360p and 4K). Measured on the demo template against its
# known head motion: the forward-backward One-Euro at 1 Hz / beta 10 cut frame-to-frame jitter from 0.26 to 0.07 px
# (360p) and 0.41 to 0.12 px (720p) and the error to ground truth by ≈40 %; a 0.5-face-height move in 0.24 s is
# followed within the noise level (no lag).
SMOOTH_MIN_CUTOFF = 1.0
SMOOTH_BETA = 10.0


def _fill(track_found: np.ndarray, landmarks: np.ndarray, confidence: np.ndarray,
          max_gap_frames: int) -> np.ndarray:
    """Fill not-found frames in place: short inner gaps linearly, the rest held. Returns the interpolated mask."""
    n = len(track_found)
    interpolated = np.zeros(n, bool)
    if not track_found.any():
        return interpolated
    for start, stop in _runs(~track_found):
        # Every gap is bounded by found frames or by the clip's ends.
        before, after = start - 1, stop
        short = stop - start <= max_gap_frames
        if short and before >= 0 and after < n:
            weights = ((np.arange(start, stop) - before) / (after - before)).astype(np.float32)
            landmarks[start:stop] = (landmarks[before] * (1 - weights[:, None, None])
                                     + landmarks[after] * weights[:, None, None])
            # An interpolated face is a guess: say so with half the neighbours' confidence.
            confidence[start:stop] = 0.5 * (confidence[before] * (1 - weights) + confidence[after] * weights)
            interpolated[start:stop] = True
            continue
        for i in range(start, stop):  # held: copy the nearest found frame
            nearest = before if after >= n or (before >= 0 and i - before <= after - i) else after
            landmarks[i] = landmarks[nearest]
            if short:  # a few frames at the very start or end: holding is as good as interpolating
                confidence[i] = 0.5 * confidence[nearest]
        interpolated[start:stop] = short
    return interpolated


PARALLEL_MIN_FRAMES = 250  # shorter videos are tracked in one pass: a second tracker's start-up would not pay off


@dataclass
class _Observations:
    """Raw per-frame tracker output for a stretch of a video."""

    found: list[bool] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # (width, height) of the frames

    def first_box(self) -> np.ndarray | None:
        return next((_landmark_box(lm) for ok, lm in zip(self.found, self.landmarks, strict=True) if ok), None)

    def last_box(self) -> np.ndarray | None:
        return next((_landmark_box(self.landmarks[i]) for i in range(len(self.found) - 1, -1, -1)
                     if self.found[i]), None)

    def extend(self, other: _Observations) -> None:
        self.found += other.found
        self.confidence += other.confidence
        self.landmarks += other.landmarks


FaceHook = Callable[[int, np.ndarray, FaceFrame], None]


def _observe(video_path: Path, tracker: FaceTracker, fps: float, start: int, count: int | None,
             on_frame: Callable[[], None], stop: threading.Event | None = None,
             on_face: FaceHook | None = None, limits: ToolLimits | None = None) -> _Observations:
    """Run ``tracker`` over ``count`` frames from ``start`` (to the end when None), decoded as I420 (the tracker
    converts only what its models see). ``on_face(index, frame, face)`` sees each frame with its raw face."""
    seen = _Observations()
    missing = np.zeros((LANDMARK_COUNT, 3), np.float32)
    with FrameReader(video_path, start_frame=start, max_frames=count, fps=fps, pix_fmt="yuv420p",
                     limits=limits) as reader:
        seen.size = (reader.width, reader.height)
        for number, frame in enumerate(reader):
            if stop is not None and stop.is_set():
                break
            face = tracker.process(frame)
            if on_face is not None:
                on_face(start + number, frame, face)
            seen.found.append(face.found)
            seen.confidence.append(face.confidence)
            seen.landmarks.append(face.landmarks.astype(np.float32) if face.found else missing)
            on_frame()
    return seen


def _same_face(before: np.ndarray | None, after: np.ndarray | None) -> bool:
    """Whether two boxes on either side of a split point are the same face (as the tracker's own matching says)."""
    if before is None or after is None:
        return False
    return FaceTracker._match([_Detection(after, 1.0)], before) is not None


def track_faces(video_path: str | os.PathLike[str], *, max_gap_frames: int = 12, min_coverage: float = 0.5,
                progress: ProgressCallback | None = None, tracker: FaceTracker | None = None,
                parallel: bool | None = None, on_face: FaceHook | None = None,
                limits: ToolLimits | None = None) -> FaceTrack:
    """Track the presenter's face through a video (streamed, never held in memory) into a ``FaceTrack``.

    Raw landmarks are smoothed over time (forward-backward One-Euro, per run of found frames), gaps up to
    ``max_gap_frames`` are interpolated, longer ones flagged in the summary. Raises ``NoFaceError`` when the face
    is found in fewer than ``min_coverage`` of the frames. Uses ``tracker`` (reset first) or this thread's.

    ``parallel`` (default: with two or more cores and at least ``PARALLEL_MIN_FRAMES`` frames): the second half is
    tracked at the same time by a second tracker in a thread (MediaPipe runs without the GIL). Where the halves
    meet, both must see the same face; if not (another person, a face lost at the split), the second half is
    tracked again by the first tracker, continuing where it stopped, so the result never hops between faces.

    ``on_face(index, frame, face)``: called with every decoded I420 frame and its raw face (from both halves'
    threads at once, and again for a re-tracked half), so per-frame work such as the mouth bank needs no decode.

    ``limits``: of ffprobe and the decoders (default: from the environment).
    """
    video_path = Path(video_path)
    info = probe(video_path, limits=limits)
    if info.video is None:
        raise NoFaceError(video_path, "has no video stream", NO_FACE_FIX)
    total = info.video.frame_count
    fps = info.video.fps or 25.0
    report_every = max(1, round(fps))
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2 and total is not None and total >= PARALLEL_MIN_FRAMES
    # Halves need the frame count: a video that does not state it is tracked in one piece.
    split = total // 2 if parallel and total is not None and total >= 2 else 0

    done = [0, 0]  # frames seen by each half; each thread counts its own

    def first_counted() -> None:  # only this thread reports: progress callbacks need not be thread-safe
        done[0] += 1
        if progress is not None and done[0] % report_every == 0:
            progress(sum(done), total)

    def second_counted() -> None:
        done[1] += 1

    if tracker is None:
        tracker = thread_tracker()  # reset there
    else:
        tracker.reset()
    second_seen: list[_Observations] = []  # the helper thread's result, or its error
    second_error: list[BaseException] = []
    stop = threading.Event()

    def track_second_half() -> None:
        try:
            with FaceTracker() as other:
                second_seen.append(_observe(video_path, other, fps, split, None, second_counted, stop, on_face,
                                            limits))
        except BaseException as error:  # raised again in the calling thread
            second_error.append(error)

    helper = threading.Thread(target=track_second_half, name="face-track-2nd-half", daemon=True) if split else None
    try:
        if helper is not None:
            helper.start()
        seen = _observe(video_path, tracker, fps, 0, split or None, first_counted, on_face=on_face,
                        limits=limits)
        if helper is not None:
            while helper.is_alive():
                helper.join(timeout=0.5)
                if progress is not None:
                    progress(sum(done), total)
            if second_error:
                raise second_error[0]
            rest = second_seen[0]
            if not _same_face(seen.last_box(), rest.first_box()):
                rest = _observe(video_path, tracker, fps, split, None, lambda: None,  # continue the first track
                                on_face=on_face, limits=limits)
            seen.extend(rest)
    finally:
        stop.set()
    found, confidence, landmarks = seen.found, seen.confidence, seen.landmarks
    width, height = seen.size
    n = len(found)
    if progress is not None:
        progress(n, total)
    if n == 0:
        raise TooShortError(video_path, "no video frame could be decoded", "upload the template again")

    found_arr = np.array(found, bool)
    conf_arr = np.array(confidence, np.float32)
    coverage = float(found_arr.mean())
    if coverage < min_coverage:
        raise NoFaceError(video_path, f"a face was found in only {coverage:.0%} of {n} frames "
                                      f"(at least {min_coverage:.0%} needed)", NO_FACE_FIX)
    lm = np.stack(landmarks)
    landmarks.clear()  # the stacked copy is the one we keep

    # Smooth in face-height units so the filter settings do not depend on resolution; in place, in float32,
    # so a long template costs its landmark table and one temporary copy, nothing more.
    scale = float(np.median(face_height(lm[found_arr]))) or 1.0
    lm /= scale
    for start, end in _runs(found_arr):
        smooth_sequence(lm[start:end], fps, SMOOTH_MIN_CUTOFF, SMOOTH_BETA, out=lm[start:end])
    lm *= scale
    interpolated = _fill(found_arr, lm, conf_arr, max_gap_frames)
    return FaceTrack(
        found=found_arr,
        interpolated=interpolated,
        confidence=conf_arr,
        boxes=_landmark_box(lm),
        landmarks=lm,
        width=width,
        height=height,
        fps=fps,
        max_gap_frames=max_gap_frames,
        source=str(video_path),
    )
