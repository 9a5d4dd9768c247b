"""Mouth geometry from face landmarks: lip contours, face height, opening limits, colours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heygem_pipeline.engine.face.landmarks import (
    CHIN,
    LEFT_EYE_OUTER,
    LOWER_INNER,
    LOWER_LIP_BOTTOM,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    NOSE_BOTTOM,
    OUTER_LIP,
    RIGHT_EYE_OUTER,
    SKIN_SAMPLES,
    UPPER_INNER,
    UPPER_LIP_TOP,
    face_height,
)

MAX_OPEN = 0.11  # widest lip gap ("ah"), as a share of face height
UPPER_SHARE = 0.3  # share of the opening made by the upper lip rising; the jaw and lower lip make the rest


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class FaceGeometry:
    """A face-aligned frame of reference for one template frame, and the template's own lip gap."""

    origin: np.ndarray  # (2,) image point at the centre of the inner lips
    x_axis: np.ndarray  # (2,) unit vector along the eye line
    y_axis: np.ndarray  # (2,) unit vector down the face
    height: float  # forehead-to-chin distance, the scale of everything
    half_width: float  # half the mouth width
    v_nose: float
    v_upper_lip: float  # top of the upper lip (outer contour, centre)
    v_lower_lip: float  # bottom of the lower lip
    v_chin: float
    gap_u: np.ndarray  # u positions along the mouth, corner to corner
    gap_top: np.ndarray  # v of the upper inner lip at gap_u
    gap_bottom: np.ndarray  # v of the lower inner lip at gap_u

    def to_face(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = xy - self.origin
        return rel @ self.x_axis, rel @ self.y_axis

    def to_image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.origin + u[..., None] * self.x_axis + v[..., None] * self.y_axis

    def template_gap(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(midline v, gap) of the template's lips at u; zero gap beyond the corners."""
        top = np.interp(u, self.gap_u, self.gap_top)
        bottom = np.interp(u, self.gap_u, self.gap_bottom)
        inside = np.abs(u) < self.half_width
        gap = np.where(inside, np.maximum(bottom - top, 0.0), 0.0)
        return (top + bottom) / 2, gap

    @property
    def mouth_gap(self) -> float:
        """The template's inner-lip gap at the centre, as a share of face height."""
        return float(np.max(self.gap_bottom - self.gap_top)) / self.height


def face_geometry(landmarks: np.ndarray) -> FaceGeometry:
    """Geometry from (478, 2+) landmark pixels."""
    points = landmarks[:, :2].astype(np.float64)
    x_axis = points[RIGHT_EYE_OUTER] - points[LEFT_EYE_OUTER]
    x_axis /= np.linalg.norm(x_axis) + 1e-9
    y_axis = np.array([-x_axis[1], x_axis[0]])
    origin = (points[13] + points[14]) / 2  # centre of the inner lips
    height = float(face_height(landmarks))

    def v_of(index: int) -> float:
        return float((points[index] - origin) @ y_axis)

    top_u = (points[list(UPPER_INNER)] - origin) @ x_axis
    top_v = (points[list(UPPER_INNER)] - origin) @ y_axis
    bottom_u = (points[list(LOWER_INNER)] - origin) @ x_axis
    bottom_v = (points[list(LOWER_INNER)] - origin) @ y_axis
    gap_u = (top_u + bottom_u) / 2
    order = np.argsort(gap_u)
    corner_u = (points[[MOUTH_LEFT, MOUTH_RIGHT]] - origin) @ x_axis
    return FaceGeometry(
        origin=origin,
        x_axis=x_axis,
        y_axis=y_axis,
        height=height,
        half_width=float(np.abs(corner_u).mean()),
        v_nose=min(v_of(NOSE_BOTTOM), v_of(UPPER_LIP_TOP) - 0.02 * height),
        v_upper_lip=v_of(UPPER_LIP_TOP),
        v_lower_lip=v_of(LOWER_LIP_BOTTOM),
        v_chin=v_of(CHIN),
        gap_u=gap_u[order],
        gap_top=top_v[order],
        gap_bottom=np.maximum(bottom_v[order], top_v[order]),
    )


def _lip_colour(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    points = np.round(landmarks[list(OUTER_LIP), :2]).astype(int)
    h, w = frame.shape[:2]
    points[:, 0] = np.clip(points[:, 0], 0, w - 1)
    points[:, 1] = np.clip(points[:, 1], 0, h - 1)
    return frame[points[:, 1], points[:, 0]].astype(np.float32).mean(axis=0)


def skin_colour(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean BGR of the nose and cheeks: the light and white balance the mouth interior is matched to."""
    points = np.round(landmarks[list(SKIN_SAMPLES), :2]).astype(int)
    h, w = frame.shape[:2]
    values = frame[np.clip(points[:, 1], 0, h - 1), np.clip(points[:, 0], 0, w - 1)].astype(np.float32)
    return values.mean(axis=0)
