"""MediaPipe Face Mesh landmarks: one frame's face, the indices the engine reads, face height."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANDMARK_COUNT = 478
FOREHEAD, CHIN = 10, 152  # landmark 10 → 152 is the face height, the scale for everything face-relative
# Face Mesh indices of the mouth and the points around it (the mouth warp, the mouth bank and captions read them).
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
NOSE_BOTTOM = 2
SKIN_SAMPLES = (1, 4, 5, 50, 280, 101, 330, 205, 425)  # nose bridge and cheeks
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 0, 17


def face_height(landmarks: np.ndarray) -> np.ndarray:
    """Forehead-to-chin distance (px) of landmarks shaped (..., 478, 3)."""
    return np.linalg.norm(landmarks[..., FOREHEAD, :2] - landmarks[..., CHIN, :2], axis=-1)


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    xy = landmarks[..., :2]
    return np.concatenate([xy.min(axis=-2), xy.max(axis=-2)], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class FaceFrame:
    """What the face track knows about one template frame (pixel coordinates of that frame)."""

    found: bool
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1
    landmarks: np.ndarray  # (478, 3) float32: x, y in pixels, z in MediaPipe's relative depth
    confidence: float = 0.0
