"""Mouth rendering for the viseme engine: deform the lower face to a target mouth shape and fill the opening.

The face-mesh landmarks of one template frame give a face-aligned frame of reference (u along the eye line,
v down the face, origin between the mouth corners) and the template's own lip gap. The target frame is made
in two steps, both smooth fields over the lower face:

1. neutral: the template's own opening (a smile with teeth, a half-open mouth) is closed by moving the upper
   lip down and the lower lip and jaw up, so the template's mouth never fights the new speech;
2. speech: from that closed mouth, the upper lip rises a little, the lower lip and jaw drop, the corners
   spread or round, by amounts taken from the mouth parameters.

The image is resampled backwards (each output pixel looks up where it came from), so lips and skin keep the
template's own texture and colour. Where the lips part, the opening is filled with a real mouth interior (the
avatar's own from its mouth bank, or the donor's: see ``mouth_interior``), anti-aliased and feathered.
Displacements fade smoothly to zero towards the nose, the cheeks and the neck, and only pixels that actually
moved are written, so there is no box edge and the rest of the frame is untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from heygem_pipeline.engine.face.landmarks import (
    OUTER_LIP,
    SKIN_SAMPLES,
)
from heygem_pipeline.engine.media.frames import i420_box, i420_planes, i420_size
from heygem_pipeline.engine.mouth.geometry import (
    MAX_OPEN,
    UPPER_SHARE,
    FaceGeometry,
    _lip_colour,
    _smoothstep,
    face_geometry,
    skin_colour,
)
from heygem_pipeline.engine.mouth.interior import MouthSample, compose_interior

MAP_STEP = 4  # the backward map is computed every MAP_STEP pixels and interpolated


@dataclass(frozen=True)
class MouthShape:
    """Target mouth in pixels for one frame, from the (open, spread, round, press) parameters."""

    gap: float  # lip gap at the centre
    width_scale: float  # relative change of mouth width (+ spread, - round)
    jaw: float  # chin drop

    @classmethod
    def from_params(cls, params: np.ndarray, geometry: FaceGeometry) -> MouthShape:
        opening, spread, rounding = float(params[0]), float(params[1]), float(params[2])
        gap = np.clip(opening, 0, 1) * MAX_OPEN * geometry.height
        return cls(gap=gap, width_scale=0.08 * spread - 0.16 * rounding, jaw=0.6 * (1 - UPPER_SHARE) * gap)


class MouthWarp:
    """The two displacement fields (neutralize, speak) of one frame and their inverse."""

    def __init__(self, geometry: FaceGeometry, shape: MouthShape) -> None:
        self.g = geometry
        self.shape = shape
        h = geometry.height
        self.lip_half_height = max((geometry.v_lower_lip - geometry.v_upper_lip) / 2, 0.02 * h)
        self.jaw_half_width = 0.45 * h
        self.neck_fade = 0.3 * h

    # Shared fall-offs (1 where the lips/jaw move fully, easing to 0 where the face must stay still).
    def _upper_fade(self, v: np.ndarray) -> np.ndarray:
        g = self.g
        return _smoothstep((v - g.v_nose) / max(g.v_upper_lip - g.v_nose, 1e-6))

    def _lower_lip_fade(self, v: np.ndarray) -> np.ndarray:
        g = self.g
        span = 0.6 * max(g.v_chin - g.v_lower_lip, 1e-6)
        return 1 - _smoothstep((v - g.v_lower_lip) / span)

    def _chin_fade(self, v: np.ndarray) -> np.ndarray:
        return 1 - _smoothstep((v - self.g.v_chin) / self.neck_fade)

    def _lateral(self, u: np.ndarray, half: float) -> np.ndarray:
        return np.clip(1 - (u / half) ** 2, 0, 1)

    def _profile(self, u: np.ndarray) -> np.ndarray:
        return self._lateral(u, self.g.half_width) ** 0.6

    # Step 1, neutralize: template → closed template (q). Inverse: closed → template (for backward sampling).
    def neutral_to_template(self, u: np.ndarray, v: np.ndarray, upper: np.ndarray) -> np.ndarray:
        _, gap = self.g.template_gap(u)
        if not gap.any():  # the template's mouth is already closed here: nothing to undo
            return v
        # Exactly the measured gap: closing further squeezes the lips, and the face mesh then reads them as apart
        # (a pause measured 0.024 face heights with a pixel more, 0.016 without, on a 360p smile).
        half_gap = gap / 2
        p = v.copy()
        for _ in range(3):  # fixed point: the fade depends on the template position itself
            shift = np.where(upper, -half_gap * self._upper_fade(p), half_gap * self._lower_lip_fade(p))
            p = v + shift
        return p

    # Step 2, speak: from the closed mouth (q) to the target (d). The upper lip rises by UPPER_SHARE of the
    # opening (fading out towards the nose), the lower lip drops by the rest and the jaw follows (fading out
    # towards the neck and the jaw's sides); corners move along u for spread/round. Only its inverse is needed.
    def inverse(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Template (u, v) for target (u, v), and the cavity mask (target points inside the parted lips)."""
        s = self.shape
        qu = u
        if s.width_scale:
            across = np.exp(-((v / (2.0 * self.lip_half_height)) ** 2))
            for _ in range(3):
                qu = u / (1 + s.width_scale * np.exp(-((qu / (1.5 * self.g.half_width)) ** 4)) * across)
        mid, _ = self.g.template_gap(qu)
        upper_travel = UPPER_SHARE * s.gap * self._profile(qu)
        lower_travel = (1 - UPPER_SHARE) * s.gap * self._profile(qu)
        top_edge = mid - upper_travel
        bottom_edge = mid + lower_travel
        upper = v < (top_edge + bottom_edge) / 2
        cavity = (v > top_edge) & (v < bottom_edge)
        qv = v
        if s.gap > 0:
            # Terms that depend on u only are computed once; the fixed point iterates over v.
            jaw = s.jaw * self._lateral(qu, self.jaw_half_width)
            for _ in range(3):
                near_lip = self._lower_lip_fade(qv)
                down = lower_travel * near_lip + jaw * self._chin_fade(qv) * (1 - near_lip)
                qv = v - np.where(upper, -upper_travel * self._upper_fade(qv), down)
            qv = np.where(cavity, mid, qv)
        pv = self.neutral_to_template(qu, qv, upper)
        return qu, pv, cavity

    def lip_edges(self, samples: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """u, top and bottom v of the parted lips in the target (for the cavity polygon)."""
        u = np.linspace(-self.g.half_width, self.g.half_width, samples)
        mid, _ = self.g.template_gap(u)
        prof = self._profile(u)
        scale = 1 + self.shape.width_scale * np.exp(-((u / (1.5 * self.g.half_width)) ** 4))
        return u * scale, mid - UPPER_SHARE * self.shape.gap * prof, mid + (1 - UPPER_SHARE) * self.shape.gap * prof

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners (u, v) of the region where anything can move."""
        g = self.g
        u = np.array([-self.jaw_half_width, self.jaw_half_width])
        v = np.array([g.v_nose, g.v_chin + self.neck_fade])
        return u, v


def _mouth_box(warp: MouthWarp, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """Pixel box (clipped to the region) around both lips, the old gap and the new one, plus a margin."""
    g = warp.g
    margin = 3.0
    u = np.array([-1.25, 1.25, -1.25, 1.25]) * g.half_width * (1 + abs(warp.shape.width_scale))
    top = min(g.v_upper_lip, float(g.gap_top.min())) - UPPER_SHARE * warp.shape.gap - margin
    bottom = max(g.v_lower_lip, float(g.gap_bottom.max())) + warp.shape.gap + margin
    corners = g.to_image(u, np.array([top, top, bottom, bottom]))
    bx0 = int(np.clip(np.floor(corners[:, 0].min()), x0, x1))
    bx1 = int(np.clip(np.ceil(corners[:, 0].max()) + 1, x0, x1))
    by0 = int(np.clip(np.floor(corners[:, 1].min()), y0, y1))
    by1 = int(np.clip(np.ceil(corners[:, 1].max()) + 1, y0, y1))
    return bx0, by0, bx1, by1


def _support_box(warp: MouthWarp, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), clipped to the frame, of everything the warp can move."""
    su, sv = warp.support()
    corners = warp.g.to_image(np.array([su[0], su[1], su[0], su[1]]), np.array([sv[0], sv[0], sv[1], sv[1]]))
    x0 = int(max(np.floor(corners[:, 0].min()) - 2, 0))
    x1 = int(min(np.ceil(corners[:, 0].max()) + 2, width))
    y0 = int(max(np.floor(corners[:, 1].min()) - 2, 0))
    y1 = int(min(np.ceil(corners[:, 1].max()) + 2, height))
    return x0, y0, x1, y1


def render_mouth_i420(frame: np.ndarray, landmarks: np.ndarray, params: np.ndarray,
                      sample: MouthSample | None = None) -> np.ndarray:
    """``render_mouth`` on an OpenCV I420 frame (H*3/2, W), in place.

    Only a box around the lower face and the skin samples is converted to BGR, drawn, and converted back;
    within it, only luma pixels (and chroma blocks) that the drawing changed are written, so the rest of the
    frame stays bit-identical to the decoded template.
    """
    width, height = i420_size(frame)
    warp = _mouth_warp(landmarks, params)
    if warp is None:
        return frame
    x0, y0, x1, y1 = _support_box(warp, width, height)
    samples = landmarks[list(SKIN_SAMPLES + OUTER_LIP), :2]
    x0 = min(x0, int(np.floor(samples[:, 0].min())) - 1)
    y0 = min(y0, int(np.floor(samples[:, 1].min())) - 1)
    x1 = max(x1, int(np.ceil(samples[:, 0].max())) + 2)
    y1 = max(y1, int(np.ceil(samples[:, 1].max())) + 2)
    box, (x0, y0, x1, y1) = i420_box(frame, x0, y0, x1, y1)  # even edges: a chroma sample covers 2x2 pixels
    if x1 - x0 < 4 or y1 - y0 < 4:
        return frame
    bgr = cv2.cvtColor(box, cv2.COLOR_YUV2BGR_I420)
    # The same warp in the box's coordinates: only the origin moves.
    offset = np.array([x0, y0], dtype=np.float64)
    box_warp = MouthWarp(dataclasses.replace(warp.g, origin=warp.g.origin - offset), warp.shape)
    drawn = _draw(bgr, landmarks - np.array([x0, y0, 0], dtype=landmarks.dtype), box_warp, sample, inplace=False)
    changed = np.any(drawn != bgr, axis=-1)
    if not changed.any():
        return frame
    back_y, back_u, back_v = i420_planes(cv2.cvtColor(drawn, cv2.COLOR_BGR2YUV_I420))
    luma, chroma_u, chroma_v = i420_planes(frame)
    np.copyto(luma[y0:y1, x0:x1], back_y, where=changed)
    block_changed = changed.reshape((y1 - y0) // 2, 2, (x1 - x0) // 2, 2).any(axis=(1, 3))
    np.copyto(chroma_u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], back_u, where=block_changed)
    np.copyto(chroma_v[y0 // 2:y1 // 2, x0 // 2:x1 // 2], back_v, where=block_changed)
    return frame


def render_mouth(frame: np.ndarray, landmarks: np.ndarray, params: np.ndarray, sample: MouthSample | None = None,
                 *, inplace: bool = False) -> np.ndarray:
    """``frame`` with the mouth set to ``params`` (open, spread, round, press) and its interior from ``sample``
    (default: the donor's); a copy unless ``inplace``."""
    warp = _mouth_warp(landmarks, params)
    return frame if warp is None else _draw(frame, landmarks, warp, sample, inplace)


def target_lips(landmarks: np.ndarray, params: np.ndarray, samples: int = 24) -> tuple[np.ndarray, np.ndarray] | None:
    """Image points (samples, 2) of the upper and lower inner lip that ``params`` give this frame, corner to
    corner (what a viewer would measure on the output); None for a face too small to draw on."""
    warp = _mouth_warp(landmarks, params)
    if warp is None:
        return None
    u, top, bottom = warp.lip_edges(samples)
    return warp.g.to_image(u, top), warp.g.to_image(u, bottom)


def _mouth_warp(landmarks: np.ndarray, params: np.ndarray) -> MouthWarp | None:
    """The warp for one frame, or None for a face too small to draw on."""
    geometry = face_geometry(landmarks)
    if geometry.height < 20 or geometry.half_width < 3:
        return None
    return MouthWarp(geometry, MouthShape.from_params(params, geometry))


def _draw(frame: np.ndarray, landmarks: np.ndarray, warp: MouthWarp, sample: MouthSample | None,
          inplace: bool) -> np.ndarray:
    geometry = warp.g
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = _support_box(warp, w, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return frame

    # The backward map is smooth except along the lip line, which the mouth interior covers, so it is
    # computed on a grid of every MAP_STEP-th pixel and interpolated (the exact map stays around the lips).
    width, height = x1 - x0, y1 - y0
    coarse_x = np.arange(x0, x1 + MAP_STEP, MAP_STEP, dtype=np.float64)
    coarse_y = np.arange(y0, y1 + MAP_STEP, MAP_STEP, dtype=np.float64)
    coarse = np.stack(np.meshgrid(coarse_x, coarse_y), axis=-1)
    # Around the lips the map folds (the template's gap collapses, the new one opens): exact, per pixel.
    mx0, my0, mx1, my1 = _mouth_box(warp, x0, y0, x1, y1)
    exact = np.stack(np.meshgrid(np.arange(mx0, mx1, dtype=np.float64), np.arange(my0, my1, dtype=np.float64)),
                     axis=-1) if mx1 > mx0 and my1 > my0 else np.zeros((0, 0, 2))
    # Both sets of points go through the warp in one call: at these sizes the fixed cost per call dominates.
    points = np.concatenate([coarse.reshape(-1, 2), exact.reshape(-1, 2)])
    pu, pv = warp.inverse(*geometry.to_face(points))[:2]
    moved = geometry.to_image(pu, pv) - points
    split = coarse.shape[0] * coarse.shape[1]
    shift = moved[:split].reshape(coarse.shape).astype(np.float32)
    shift = cv2.resize(shift, (len(coarse_x) * MAP_STEP, len(coarse_y) * MAP_STEP),
                       interpolation=cv2.INTER_LINEAR)[:height, :width]
    if exact.size:
        shift[my0 - y0: my1 - y0, mx0 - x0: mx1 - x0] = moved[split:].reshape(exact.shape)
    map_x = shift[..., 0] + np.arange(x0, x1, dtype=np.float32)[None, :]
    map_y = shift[..., 1] + np.arange(y0, y1, dtype=np.float32)[:, None]
    warped = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    painted = None
    if warp.shape.gap >= 0.6:  # under a pixel of opening there is nothing inside to show
        if sample is None:
            from heygem_pipeline.engine.mouth.bank import donor_sample

            sample = donor_sample()
        u, top, bottom = warp.lip_edges()
        painted = compose_interior(warped, x0, y0, geometry, u, top, bottom, sample, skin_colour(frame, landmarks),
                                   _lip_colour(frame, landmarks))

    # Write back only what moved (or was painted): everything else stays bit-identical to the template.
    alpha = np.clip(np.hypot(shift[..., 0], shift[..., 1]) * 4.0, 0, 1)  # full weight from a quarter pixel
    if painted is not None:
        cover, (px, py) = painted
        region = alpha[py:py + cover.shape[0], px:px + cover.shape[1]]
        np.maximum(region, cover, out=region)
    out = frame if inplace else frame.copy()
    out[y0:y1, x0:x1] = cv2.blendLinear(warped, frame[y0:y1, x0:x1], alpha, 1 - alpha)
    return out
