"""The per-frame face tracker: full-range detection, mesh on a crop that follows the face."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from heygem_pipeline.engine.face.landmarks import LANDMARK_COUNT, FaceFrame, _landmark_box
from heygem_pipeline.engine.media.frames import i420_box, i420_size


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


_THREAD_TRACKERS = threading.local()


def thread_tracker() -> FaceTracker:
    """This thread's face tracker, created on first use and kept (reset here): loading MediaPipe's models costs
    ~0.7 s, more than tracking or measuring a short clip, so a worker that handles many loads them once."""
    tracker = getattr(_THREAD_TRACKERS, "tracker", None)
    if tracker is None:
        tracker = _THREAD_TRACKERS.tracker = FaceTracker()
    tracker.reset()
    return tracker
