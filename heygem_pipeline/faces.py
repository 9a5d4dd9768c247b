"""Face tracking of presenter templates: 478 MediaPipe landmarks per frame, smoothed, gap-filled, saved as Parquet.

Measured facts behind the design (see shared/reference/mediapipe/NOTES.md): FaceMesh's built-in detector is the
short-range one and misses presenter-sized faces in 720p frames, so the full-range ``FaceDetection`` locates the
face and the mesh runs on a square crop ≈2.2× the face. The next frame's crop follows the landmarks, so the detector
runs only to (re)acquire the face and for a cheap periodic check (about once a second) that the track still sits on
a face — and, with several people in the picture, on the same one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from heygem_pipeline.engines.base import FaceFrame
from heygem_pipeline.errors import HeygemError, NoFaceError, TooShortError
from heygem_pipeline.media import FrameReader, atomic_output, i420_box, i420_size, probe

LANDMARK_COUNT = 478
FOREHEAD, CHIN = 10, 152  # landmark 10 → 152 is the face height, the scale for everything face-relative
FACE_TRACK_SCHEMA_VERSION = "1"
NO_FACE_FIX = "upload a template where the presenter's face is visible and frontal in most frames"

ProgressCallback = Callable[[int, "int | None"], None]


class FaceTrackFormatError(HeygemError, ValueError):
    """A saved face track that this version cannot read (another schema version, or not a face track)."""


# --------------------------------------------------------------------------------------------------- smoothing


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


# ---------------------------------------------------------------------------------------------------- tracking


def face_height(landmarks: np.ndarray) -> np.ndarray:
    """Forehead-to-chin distance (px) of landmarks shaped (..., 478, 3)."""
    return np.linalg.norm(landmarks[..., FOREHEAD, :2] - landmarks[..., CHIN, :2], axis=-1)


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    xy = landmarks[..., :2]
    return np.concatenate([xy.min(axis=-2), xy.max(axis=-2)], axis=-1).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class _Detection:
    box: np.ndarray  # x0, y0, x1, y1 in frame pixels
    score: float

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2.0

    @property
    def side(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _missing() -> FaceFrame:
    return FaceFrame(found=False, box=np.zeros(4, np.float32), landmarks=np.zeros((LANDMARK_COUNT, 3), np.float32),
                     confidence=0.0)


_QUIET_LOCK = threading.Lock()
_QUIET_STATE = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for a moment.

    MediaPipe's C++ side writes start-up warnings ("Feedback manager requires…", "Using NORM_RECT…") straight to
    stderr through absl, with no Python switch; they would bury the CLI's own output. Python errors still raise.
    """
    with _QUIET_LOCK:  # two trackers may start at once (track_faces' halves): the first in restores stderr last
        if _QUIET_STATE["depth"] == 0:
            sys.stderr.flush()
            _QUIET_STATE["saved"] = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _QUIET_STATE["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_STATE["depth"] -= 1
            if _QUIET_STATE["depth"] == 0:
                os.dup2(_QUIET_STATE["saved"], 2)
                os.close(_QUIET_STATE["saved"])


# Lines MediaPipe's native side writes to stderr on start-up (absl and TFLite, no Python switch to silence them).
MEDIAPIPE_NOISE = ("inference_feedback_manager.cc", "landmark_projection_calculator.cc",
                   "All log messages before absl::InitializeLog()", "Created TensorFlow Lite XNNPACK delegate")


def filter_native_stderr(noise: tuple[str, ...] = MEDIAPIPE_NOISE) -> Callable[[], None]:
    """For the rest of this process, drop stderr lines containing any of ``noise``; everything else passes.
    Returns a function that passes on what is still in the pipe; call it before leaving with ``os._exit``.

    For long-lived worker processes: there MediaPipe's graph threads may log after ``quiet_native_stderr``'s
    window has closed (they start asynchronously, later still on a busy machine). File descriptor 2 becomes a pipe
    that a thread reads line by line and copies to the original stderr. Not for the interactive CLI: its stderr
    would stop being a terminal, and the progress bars would lose their live line.
    """
    original = os.dup(2)
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    marks = tuple(mark.encode() for mark in noise)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as lines, os.fdopen(original, "wb", buffering=0) as out:
            pending = b""
            while chunk := lines.read(65536):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                kept = [line for line in complete if not any(mark in line for mark in marks)]
                if kept:
                    out.write(b"\n".join(kept) + b"\n")
            if pending and not any(mark in pending for mark in marks):
                out.write(pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def finish() -> None:
        sys.stderr.flush()
        os.close(2)  # the pump's end of file
        thread.join(timeout=2)

    return finish


def _frame_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of a BGR (H, W, 3) or OpenCV I420 (H*3/2, W) frame."""
    return i420_size(frame) if frame.ndim == 2 else (frame.shape[1], frame.shape[0])


def _rgb(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """RGB copy of the box [x0, x1) × [y0, y1) of a BGR or I420 frame (only the box is converted)."""
    if frame.ndim == 2:
        box, (bx0, by0, _, _) = i420_box(frame, x0, y0, x1, y1)  # grown to even edges
        return cv2.cvtColor(box, cv2.COLOR_YUV2RGB_I420)[y0 - by0: y1 - by0, x0 - bx0: x1 - bx0]
    return cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2RGB)


class FaceTracker:
    """Follow one presenter's face through a stream of frames (BGR, or OpenCV I420 arrays as ``FrameReader``
    yields with ``pix_fmt="yuv420p"``: only the regions the models look at are converted), 478 landmarks per frame
    in frame pixels.

    Per frame: without a track (start, or lost) the full-range detector finds faces — at the start the largest,
    most central one is chosen, later only one near where the tracked face was, so the track never hops to another
    person. The mesh runs on a square crop ``crop_scale``× the face around the previous frame's landmarks. When the
    mesh fails or lands off the crop's centre, the detector re-locates the face in the same frame and the mesh is
    retried once. Every ``redetect_every`` frames the detector also checks the track: its score becomes the
    track's confidence, and a track the detector keeps disagreeing with is dropped.

    ``process`` returns raw (unsmoothed) observations; ``track_faces`` smooths and fills gaps. Not thread-safe: one
    tracker per worker; ``reset()`` between videos.
    """

    def __init__(self, *, crop_scale: float = 2.2, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, redetect_every: int = 25, reacquire_after: int = 50,
                 max_crop_side: int = 512, max_detect_side: int = 1280) -> None:
        import mediapipe as mp  # heavy import, kept local so importing this module stays cheap

        self.crop_scale = crop_scale
        self.min_detection_confidence = min_detection_confidence
        self.redetect_every = redetect_every
        self.reacquire_after = reacquire_after
        self.max_crop_side = max_crop_side
        self.max_detect_side = max_detect_side
        self._quiet_calls = 3  # MediaPipe's start-up warnings come with the first faces; keep them off the CLI
        self.detections_run = 0
        with quiet_native_stderr():
            self._make_models(mp, min_detection_confidence, min_tracking_confidence)
            self.reset()  # runs the mesh once: its models initialise here

    def _make_models(self, mp: Any, min_detection_confidence: float, min_tracking_confidence: float) -> None:
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_detection_confidence)
        # static_image_mode=False: the mesh reuses its previous landmarks as the next region of interest instead of
        # running its own detector every frame (≈4 ms instead of ≈5.6 ms at 720p). That stays valid across our
        # moving crops because every crop puts the face at the same place and scale (centred, 1/crop_scale).
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)

    # -- state

    def reset(self) -> None:
        """Forget the current track (call between videos)."""
        self._centre: np.ndarray | None = None  # crop centre (x, y) for the next frame; None = no track
        self._side = 0.0  # face size (px) the next crop is built around
        self._box: np.ndarray | None = None  # last landmark box of the track
        self._confidence = 0.0
        self._since_detect = 0
        self._lost = 0
        self.detections_run = 0
        if hasattr(self, "_mesh"):
            self._clear_mesh_memory()  # the previous video's face must not steer this one's first frames

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- detection

    def _detect(self, frame: np.ndarray) -> list[_Detection]:
        self.detections_run += 1
        self._since_detect = 0
        width, height = _frame_size(frame)
        scale = min(1.0, self.max_detect_side / max(height, width))  # the model sees 192 px anyway; convert less
        rgb = _rgb(frame, 0, 0, width, height)
        small = rgb if scale == 1.0 else cv2.resize(rgb, (round(width * scale), round(height * scale)),
                                                    interpolation=cv2.INTER_AREA)
        result = self._detector.process(np.ascontiguousarray(small))
        found = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            box = np.array([rel.xmin * width, rel.ymin * height, (rel.xmin + rel.width) * width,
                            (rel.ymin + rel.height) * height], np.float32)
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                found.append(_Detection(box, float(detection.score[0])))
        return found

    @staticmethod
    def _rank(detection: _Detection, width: int, height: int) -> float:
        """Largest first, most central as the tie-break: the presenter, not a face in the background."""
        bw, bh = detection.box[2] - detection.box[0], detection.box[3] - detection.box[1]
        size = math.sqrt(max(bw * bh, 0.0) / (width * height))
        cx, cy = detection.centre
        off = math.hypot((cx - width / 2) / (width / 2), (cy - height / 2) / (height / 2)) / math.sqrt(2)
        return size * (1.0 - 0.5 * min(off, 1.0))

    @staticmethod
    def _match(detections: list[_Detection], box: np.ndarray) -> _Detection | None:
        """The detection that is the tracked face: overlapping it or close to its centre, of similar size."""
        centre = (box[:2] + box[2:]) / 2.0
        side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
        best, best_cost = None, math.inf
        for detection in detections:
            ratio = detection.side / side
            distance = float(np.linalg.norm(detection.centre - centre)) / side
            overlap = _iou(detection.box, box)
            if not 0.5 <= ratio <= 2.0 or (overlap < 0.2 and distance > 0.6):
                continue
            cost = distance - overlap
            if cost < best_cost:
                best, best_cost = detection, cost
        return best

    def _acquire(self, detections: list[_Detection], width: int, height: int) -> _Detection | None:
        if not detections:
            return None
        if self._box is None:  # first face of this video
            return max(detections, key=lambda d: self._rank(d, width, height))
        near = self._match(detections, self._box)
        if near is not None:
            return near
        # The presenter moved while the face was hidden: after a long loss accept a lone face, but never pick
        # between several people far from where the tracked one was.
        if self._lost > self.reacquire_after and len(detections) == 1:
            return detections[0]
        return None

    def _start(self, detection: _Detection) -> None:
        self._centre = detection.centre.astype(np.float64)
        self._side = detection.side
        self._confidence = detection.score

    # -- mesh

    def _mesh_at(self, frame: np.ndarray) -> np.ndarray | None:
        """Run the mesh on the square crop around the track; landmarks in frame pixels or None."""
        assert self._centre is not None
        width, height = _frame_size(frame)
        size = max(8, round(self._side * self.crop_scale))
        x0, y0 = round(self._centre[0] - size / 2), round(self._centre[1] - size / 2)
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(width, x0 + size), min(height, y0 + size)
        if xb - xa < size // 4 or yb - ya < size // 4:
            return None  # the crop has left the picture
        patch = _rgb(frame, xa, ya, xb, yb)
        if (xa, ya, xb, yb) != (x0, y0, x0 + size, y0 + size):
            # Pad instead of shifting so the face stays centred in the crop near the picture's edges.
            patch = cv2.copyMakeBorder(patch, ya - y0, y0 + size - yb, xa - x0, x0 + size - xb, cv2.BORDER_CONSTANT,
                                       value=(0, 0, 0))
        if size > self.max_crop_side:  # the landmark model sees 192–256 px; smaller crops convert faster
            patch = cv2.resize(patch, (self.max_crop_side, self.max_crop_side), interpolation=cv2.INTER_AREA)
        result = self._mesh.process(np.ascontiguousarray(patch))  # MediaPipe needs C-contiguous RGB
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        landmarks = np.array([(p.x, p.y, p.z) for p in points], np.float32) * np.float32(size)
        if len(landmarks) != LANDMARK_COUNT:
            return None
        # Sanity check: a face that is not centred at the expected scale is a mesh on the wrong thing (a stale
        # region of interest, a neighbour's face) — treat it as a miss so the detector re-locates the face.
        lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
        off = np.abs((lo + hi) / 2 - size / 2).max() / size
        extent = float((hi - lo).max()) / size
        if off > 0.25 or not 0.2 <= extent <= 0.8:
            self._clear_mesh_memory()
            return None
        landmarks[:, 0] += x0
        landmarks[:, 1] += y0
        return landmarks

    def _clear_mesh_memory(self) -> None:
        """Make the mesh forget its previous landmarks, so its next call starts from its own detector.

        The legacy API has no reset; a blank picture makes it lose the face, which clears its region of interest.
        """
        self._mesh.process(np.zeros((64, 64, 3), np.uint8))

    # -- per frame

    def process(self, frame: np.ndarray) -> FaceFrame:
        """Observe one BGR or I420 frame; raw (not smoothed) landmarks. ``found`` is False when no face is tracked."""
        if self._quiet_calls > 0:
            # The warnings come when the mesh's landmark model first runs, i.e. with the first faces found.
            with quiet_native_stderr():
                face = self._process(frame)
            self._quiet_calls -= 1 if face.found else 0
            return face
        return self._process(frame)

    def _process(self, frame: np.ndarray) -> FaceFrame:
        width, height = _frame_size(frame)
        detections: list[_Detection] | None = None
        if self._centre is None:
            detections = self._detect(frame)
            pick = self._acquire(detections, width, height)
            if pick is None:
                self._lost += 1
                return _missing()
            self._start(pick)
        elif self._since_detect >= self.redetect_every:
            detections = self._detect(frame)
            assert self._box is not None
            match = self._match(detections, self._box)
            if match is not None:
                self._confidence = match.score
            else:  # the mesh sees a face the detector does not: trust it a little less each time
                self._confidence *= 0.8
                if self._confidence < self.min_detection_confidence * 0.5:
                    self._drop()
                    return _missing()
        else:
            self._since_detect += 1

        landmarks = self._mesh_at(frame)
        if landmarks is None:
            # Missed: re-locate the face now (unless the detector just ran) and retry the mesh once rather than give
            # up a frame. After a miss the mesh runs its own detector on the next call, so the retry also recovers
            # from a stale region of interest.
            if detections is None:
                detections = self._detect(frame)
                match = self._match(detections, self._box) if self._box is not None else None
                if match is not None:
                    self._start(match)
                else:
                    detections = []
            landmarks = self._mesh_at(frame) if detections else None
        if landmarks is None:
            self._drop()
            return _missing()

        box = _landmark_box(landmarks)
        self._box = box
        self._centre = ((box[:2] + box[2:]) / 2.0).astype(np.float64)
        self._side = float(max(box[2] - box[0], box[3] - box[1]))
        self._lost = 0
        return FaceFrame(found=True, box=box, landmarks=landmarks, confidence=float(self._confidence))

    def _drop(self) -> None:
        """Lose the track but remember where it was, so re-acquisition prefers the same person."""
        self._centre = None
        self._lost += 1


# -------------------------------------------------------------------------------------------------- face track


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


# -------------------------------------------------------------------------------------------------- pipeline


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


_THREAD_TRACKERS = threading.local()


def thread_tracker() -> FaceTracker:
    """This thread's face tracker, created on first use and kept (reset here): loading MediaPipe's models costs
    ~0.7 s, more than tracking or measuring a short clip, so a worker that handles many loads them once."""
    tracker = getattr(_THREAD_TRACKERS, "tracker", None)
    if tracker is None:
        tracker = _THREAD_TRACKERS.tracker = FaceTracker()
    tracker.reset()
    return tracker


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
             on_face: FaceHook | None = None) -> _Observations:
    """Run ``tracker`` over ``count`` frames from ``start`` (to the end when None), decoded as I420 (the tracker
    converts only what its models see). ``on_face(index, frame, face)`` sees each frame with its raw face."""
    seen = _Observations()
    missing = np.zeros((LANDMARK_COUNT, 3), np.float32)
    with FrameReader(video_path, start_frame=start, max_frames=count, fps=fps, pix_fmt="yuv420p") as reader:
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
                parallel: bool | None = None, on_face: FaceHook | None = None) -> FaceTrack:
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
    """
    video_path = Path(video_path)
    info = probe(video_path)
    if info.video is None:
        raise NoFaceError(video_path, "has no video stream", NO_FACE_FIX)
    total = info.video.frame_count
    fps = info.video.fps or 25.0
    report_every = max(1, round(fps))
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2 and total >= PARALLEL_MIN_FRAMES
    split = total // 2 if parallel and total >= 2 else 0

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
    second: dict[str, object] = {}
    stop = threading.Event()

    def track_second_half() -> None:
        try:
            with FaceTracker() as other:
                second["seen"] = _observe(video_path, other, fps, split, None, second_counted, stop, on_face)
        except BaseException as error:  # raised again in the calling thread
            second["error"] = error

    helper = threading.Thread(target=track_second_half, name="face-track-2nd-half", daemon=True) if split else None
    try:
        if helper is not None:
            helper.start()
        seen = _observe(video_path, tracker, fps, 0, split or None, first_counted, on_face=on_face)
        if helper is not None:
            while helper.is_alive():
                helper.join(timeout=0.5)
                if progress is not None:
                    progress(sum(done), total)
            if "error" in second:
                raise second["error"]  # type: ignore[misc]
            rest = second["seen"]
            assert isinstance(rest, _Observations)
            if not _same_face(seen.last_box(), rest.first_box()):
                rest = _observe(video_path, tracker, fps, split, None, lambda: None,  # continue the first track
                                on_face=on_face)
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
    for start, stop in _runs(found_arr):
        smooth_sequence(lm[start:stop], fps, SMOOTH_MIN_CUTOFF, SMOOTH_BETA, out=lm[start:stop])
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
