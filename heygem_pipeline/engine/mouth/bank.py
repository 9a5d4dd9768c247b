"""The mouth bank: the template's own open-mouth appearances, indexed by mouth shape (Video Rewrite, Bregler 1997).

Built once per avatar while its face is tracked (``BankBuilder.observe`` sees every decoded frame with its raw
landmarks). Every frame whose lips are parted is binned by shape (inner-lip opening and mouth width, in face
heights); each bin keeps its most frontal frame, whose mouth interior (teeth, tongue, throat) is resampled into
a canonical face-aligned patch: u along the eye line, v down the face, origin between the inner lips, one pixel
= ``PITCH`` face heights. The inner-lip contour at fixed stations along the mouth goes with it, so a renderer can
place the interior between the target lips of any frame, in any head pose.

A template that never parts its lips (a closed-mouth photo) gets a donor instead: the mouth of scikit-image's
``astronaut`` (NASA portrait of Eileen Collins, public domain, shipped in the wheel), who smiles with her teeth.

For a script, ``select`` picks one sample per output frame by Viterbi over the whole track: close in shape to
the wanted mouth, with a cost for every switch, so the teeth do not flicker between samples.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from heygem_pipeline.engine.face.landmarks import FaceFrame
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.frames import i420_box
from heygem_pipeline.engine.mouth.geometry import MAX_OPEN, SKIN_SAMPLES, face_geometry, skin_colour
from heygem_pipeline.engine.mouth.interior import HALF_U, PATCH_H, PATCH_W, PITCH, STATIONS, V_TOP, MouthSample
from heygem_pipeline.settings import ToolLimits

MIN_OPEN = 0.015  # inner-lip gap (face heights) from which a frame shows its mouth's interior
GAP_BIN, WIDTH_BIN = 0.008, 0.03  # bin sizes (face heights)
MAX_SAMPLES = 64
BANK_VERSION = 1


def _frontal(landmarks: np.ndarray) -> float:
    """0 for a frontal face, growing with yaw: the nose tip's offset from the eyes' midpoint, in eye distances."""
    left, right, nose = landmarks[33, :2], landmarks[263, :2], landmarks[1, :2]
    span = float(np.linalg.norm(right - left)) + 1e-6
    return abs(float((nose - (left + right) / 2) @ (right - left)) / span ** 2)


def _contour(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """Inner-lip top and bottom (face heights) at ``STATIONS``, half mouth width, face height, and the 2x3 affine
    map from patch pixels to image pixels."""
    g = face_geometry(landmarks)
    u = STATIONS * g.half_width
    top = np.interp(u, g.gap_u, g.gap_top) / g.height
    bottom = np.maximum(np.interp(u, g.gap_u, g.gap_bottom) / g.height, top)
    step = PITCH * g.height
    # patch (col, row) -> image: origin + ((col + 0.5) * step - HALF_U * H) * x + ((row + 0.5) * step + V_TOP * H) * y
    to_image = np.column_stack([g.x_axis * step, g.y_axis * step,
                                g.origin + g.x_axis * (0.5 * step - HALF_U * g.height)
                                + g.y_axis * (0.5 * step + V_TOP * g.height)])
    return top, bottom, g.half_width / g.height, g.height, to_image


def extract_patch(frame: np.ndarray, to_image: np.ndarray, pix_fmt: str = "bgr24") -> np.ndarray:
    """The canonical patch (PATCH_H, PATCH_W, 3) BGR of one frame, given the patch-to-image affine map."""
    corners = np.array([[0, 0, 1], [PATCH_W, 0, 1], [0, PATCH_H, 1], [PATCH_W, PATCH_H, 1]], np.float64) @ to_image.T
    x0, y0 = (np.floor(corners.min(axis=0)) - 2).astype(int)
    x1, y1 = (np.ceil(corners.max(axis=0)) + 2).astype(int)
    if pix_fmt == "yuv420p":
        box, (x0, y0, x1, y1) = i420_box(frame, x0, y0, x1, y1)
        region = cv2.cvtColor(box, cv2.COLOR_YUV2BGR_I420)
    else:
        x0, y0 = max(x0, 0), max(y0, 0)
        region = frame[y0:y1, x0:x1]
    local = to_image.copy()
    local[:, 2] -= (x0, y0)
    return cv2.warpAffine(region, local, (PATCH_W, PATCH_H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


TEETH_TOGETHER_SEAM = 0.72  # the upper teeth show about three quarters of a smile whose teeth touch


def _seam(patch: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> float:
    """Where the upper teeth end, as a share of the gap: a clearly dark row inside it (the bite line of parted
    teeth, or the throat), else the usual share of upper teeth in a smile whose teeth touch."""
    centre = np.abs(STATIONS) <= 0.5
    t, b = float(top[centre].mean()), float(bottom[centre].mean())
    rows = np.arange(int((t - V_TOP) / PITCH), int(np.ceil((b - V_TOP) / PITCH)) + 1)
    rows = rows[(rows >= 0) & (rows < PATCH_H)]
    if len(rows) < 5:
        return TEETH_TOGETHER_SEAM
    cols = slice(int(PATCH_W * 0.4), int(PATCH_W * 0.6))
    luma = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)[rows, cols].astype(np.float32).mean(axis=1)
    share = ((rows + 0.5) * PITCH + V_TOP - t) / max(b - t, 1e-6)
    inside = (share >= 0.3) & (share <= 0.9)  # the lips' own shadows lie at the edges
    if not inside.any():
        return TEETH_TOGETHER_SEAM
    valley = int(np.flatnonzero(inside)[np.argmin(luma[inside])])
    if luma[valley] < 0.7 * np.percentile(luma, 80):
        return float(share[valley])
    return TEETH_TOGETHER_SEAM


@dataclass(frozen=True)
class MouthBank:
    """An avatar's mouth samples, their shape features (opening, width, rounding) and the template's usual width."""

    patches: np.ndarray  # (K, PATCH_H, PATCH_W, 3) uint8
    tops: np.ndarray  # (K, S) float32
    bottoms: np.ndarray  # (K, S) float32
    half_widths: np.ndarray  # (K,) float32
    seams: np.ndarray  # (K,) float32
    skins: np.ndarray  # (K, 3) float32
    frames: np.ndarray  # (K,) int64 template frame of each sample (-1: donor)
    neutral_width: float  # the template's median mouth width (face heights)
    donor: bool = False

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def features(self) -> np.ndarray:
        """(K, 3): opening, width, rounding (narrowing against the template's usual width)."""
        gap = (self.bottoms - self.tops).max(axis=1)
        width = 2 * self.half_widths
        return np.stack([gap, width, np.maximum(0, 1 - width / self.neutral_width)], axis=1).astype(np.float32)

    def sample(self, index: int) -> MouthSample:
        return MouthSample(self.patches[index], self.tops[index], self.bottoms[index], float(self.half_widths[index]),
                           float(self.seams[index]), self.skins[index], self.donor)

    def select(self, params: np.ndarray, switch_cost: float = 6.0) -> np.ndarray:
        """One sample per row of ``params`` (open, spread, round, press): Viterbi over shape cost + switches.

        A switch costs as much as being 0.03 face heights off in opening: on a talking template with 16 samples and
        8.9 s of speech this made 24 switches (3 runs of 1-2 frames) instead of 41 (16 short runs) at half that cost.
        """
        n, k = len(params), len(self)
        if k <= 1 or n == 0:
            return np.zeros(n, np.int64)
        wanted_gap = np.clip(params[:, 0], 0, 1) * MAX_OPEN
        wanted_width = self.neutral_width * (1 + 0.08 * params[:, 1] - 0.16 * params[:, 2])
        wanted = np.stack([wanted_gap, wanted_width, np.maximum(0, 1 - wanted_width / self.neutral_width)], axis=1)
        diff = self.features[None, :, :] - wanted[:, None, :]
        # A sample narrower than the wanted opening leaves a middle to synthesize: twice the cost of a wider one.
        gap_cost = (diff[..., 0] / 0.012) ** 2 * np.where(diff[..., 0] < 0, 2.0, 1.0)
        cost = gap_cost + (diff[..., 1] / 0.04) ** 2 + (diff[..., 2] / 0.08) ** 2
        cost[wanted_gap < 0.01] *= 0.05  # a closed mouth shows no interior: hold the current sample instead
        total = cost[0].copy()
        back = np.zeros((n, k), np.int64)
        for t in range(1, n):
            stay = total
            best = int(np.argmin(total))
            switch = total[best] + switch_cost
            back[t] = np.where(stay <= switch, np.arange(k), best)
            total = np.minimum(stay, switch) + cost[t]
        path = np.empty(n, np.int64)
        path[-1] = int(np.argmin(total))
        for t in range(n - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, version=BANK_VERSION, patches=self.patches, tops=self.tops,
                                bottoms=self.bottoms, half_widths=self.half_widths, seams=self.seams,
                                skins=self.skins, frames=self.frames, neutral_width=self.neutral_width,
                                donor=self.donor)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MouthBank | None:
        """The bank saved at ``path``; None when there is none or it is of another version (build it again)."""
        try:
            with np.load(path) as data:
                if int(data["version"]) != BANK_VERSION:
                    return None
                return cls(data["patches"], data["tops"], data["bottoms"], data["half_widths"], data["seams"],
                           data["skins"], data["frames"], float(data["neutral_width"]), bool(data["donor"]))
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def from_samples(cls, samples: list[tuple[int, MouthSample]], neutral_width: float, donor: bool = False
                     ) -> MouthBank:
        return cls(np.stack([s.patch for _, s in samples]), np.stack([s.top for _, s in samples]).astype(np.float32),
                   np.stack([s.bottom for _, s in samples]).astype(np.float32),
                   np.array([s.half_width for _, s in samples], np.float32),
                   np.array([s.seam for _, s in samples], np.float32),
                   np.stack([s.skin for _, s in samples]).astype(np.float32),
                   np.array([f for f, _ in samples], np.int64), float(neutral_width), donor)


def sample_of(frame: np.ndarray, landmarks: np.ndarray, pix_fmt: str = "bgr24", donor: bool = False) -> MouthSample:
    """The mouth sample of one frame with its landmarks."""
    top, bottom, half_width, _, to_image = _contour(landmarks)
    patch = extract_patch(frame, to_image, pix_fmt)
    if pix_fmt == "yuv420p":
        # The skin samples lie in a small box around the nose: convert only that to BGR.
        points = landmarks[list(SKIN_SAMPLES), :2]
        x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
        box, (x0, y0, _, _) = i420_box(frame, x0, y0, x1, y1)
        local = landmarks - np.array([x0, y0, 0], landmarks.dtype)
        skin = skin_colour(cv2.cvtColor(box, cv2.COLOR_YUV2BGR_I420), local)
    else:
        skin = skin_colour(frame, landmarks)
    return MouthSample(patch, top.astype(np.float32), bottom.astype(np.float32), half_width,
                       _seam(patch, top, bottom), skin, donor)


@lru_cache(maxsize=1)
def donor_sample() -> MouthSample:
    """The astronaut's smiling mouth (upper and lower teeth), tracked once per process."""
    from skimage import data  # lazily: only closed-mouth templates need the donor

    from heygem_pipeline.engine.face.tracker import FaceTracker

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    with FaceTracker() as tracker:
        face = tracker.process(photo)
    if not face.found:
        raise RuntimeError("the donor photo's face was not found")
    return sample_of(photo, face.landmarks, donor=True)


class BankBuilder:
    """Collects a bank from frames as they are tracked (thread-safe: two halves of a video may feed it at once)."""

    def __init__(self, pix_fmt: str = "yuv420p") -> None:
        self.pix_fmt = pix_fmt
        self._lock = threading.Lock()
        self._bins: dict[tuple[int, int], tuple[float, int, MouthSample, np.ndarray]] = {}
        self._widths: list[float] = []

    def observe(self, index: int, frame: np.ndarray, face: FaceFrame) -> None:
        if not face.found:
            return
        landmarks = face.landmarks
        g = face_geometry(landmarks)
        if g.height < 20:
            return
        gap, width = g.mouth_gap, 2 * g.half_width / g.height
        with self._lock:
            self._widths.append(width)
        if gap < MIN_OPEN:
            return
        key = (int(gap / GAP_BIN), int(width / WIDTH_BIN))
        score = _frontal(landmarks) - 0.1 * face.confidence
        with self._lock:
            held = self._bins.get(key)
            if held is not None and held[0] <= score:
                return
        sample = sample_of(frame, landmarks, self.pix_fmt)
        with self._lock:
            held = self._bins.get(key)
            if held is None or score < held[0]:
                self._bins[key] = (score, index, sample, g.origin.copy())

    def finish(self, track_landmarks: np.ndarray | None = None, usable: np.ndarray | None = None) -> MouthBank:
        """The bank. With the final (smoothed) track, samples whose mouth is not where the track has it are
        dropped (a stretch tracked on another face and then tracked again). No sample: the donor's mouth."""
        neutral = float(np.median(self._widths)) if self._widths else 0.4
        kept: list[tuple[int, MouthSample]] = []
        for _, index, sample, origin in sorted(self._bins.values(), key=lambda held: held[0]):
            if track_landmarks is not None:
                if index >= len(track_landmarks) or (usable is not None and not usable[index]):
                    continue
                lm = track_landmarks[index]
                height = float(np.linalg.norm(lm[10, :2] - lm[152, :2]))
                if np.linalg.norm((lm[13, :2] + lm[14, :2]) / 2 - origin) > 0.05 * height:
                    continue
            kept.append((index, sample))
        kept = kept[:MAX_SAMPLES]
        if not kept:
            return MouthBank.from_samples([(-1, donor_sample())], neutral, donor=True)
        return MouthBank.from_samples(kept, neutral)


def bank_from_video(video: str | os.PathLike[str], track_landmarks: np.ndarray, usable: np.ndarray,
                    fps: float, limits: ToolLimits | None = None) -> MouthBank:
    """A bank built from a template already tracked (one decode pass), for face tracks made without one."""
    from heygem_pipeline.engine.media.frames import FrameReader

    builder = BankBuilder("yuv420p")
    with FrameReader(video, fps=fps, pix_fmt="yuv420p", max_frames=len(usable), limits=limits) as reader:
        for index, frame in enumerate(reader):
            builder.observe(index, frame, FaceFrame(bool(usable[index]), np.zeros(4, np.float32),
                                                    track_landmarks[index], 1.0))
    return builder.finish()
