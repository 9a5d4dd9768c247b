"""The inside of an opened mouth, made of a real mouth sample placed between the target frame's lips.

A ``MouthSample`` is a real interior (the template's own, or the donor's) in a canonical face-aligned patch with
its inner-lip contour (see ``mouth_bank``). Placing it follows anatomy rather than stretching it: the upper teeth
hang from the upper lip and the lower teeth sit on the lower lip, so the sample's part above its bite line (or
throat) is taken at the same distance below the target's upper lip, and the part below it at the same distance
above the target's lower lip. As the mouth closes, the lips cover the middle of the sample; opened wider than the
sample, the middle is a throat graded to dark red with a hint of tongue at wide vowels. Colours follow the face's
light (the skin's colour now against where the sample was taken), the sample is resampled at the face's scale
(sharpness), the throat gets grain, and the edge against the lips is anti-aliased and feathered: the lips
themselves are never painted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np

PITCH = 0.004  # face heights per patch pixel
HALF_U = 0.30  # patch half-width (face heights): beyond the mouth corners of a wide smile
V_TOP, V_BOTTOM = -0.06, 0.16  # patch rows (face heights from the inner-lip centre)
PATCH_W, PATCH_H = round(2 * HALF_U / PITCH), round((V_BOTTOM - V_TOP) / PITCH)
STATIONS = np.linspace(-1.0, 1.0, 17)  # inner-lip contour samples, in half mouth widths
TONGUE_FROM = 0.05  # opening (face heights) from which a tongue shows in a synthesized throat


@dataclass(frozen=True)
class MouthSample:
    """One real mouth interior, ready to place between a target frame's lips."""

    patch: np.ndarray  # (PATCH_H, PATCH_W, 3) uint8 BGR, canonical
    top: np.ndarray  # (len(STATIONS),) upper inner lip, face heights from the inner-lip centre
    bottom: np.ndarray  # lower inner lip
    half_width: float  # face heights
    seam: float  # share of the gap above the bite line / throat
    skin: np.ndarray  # (3,) BGR of the face's skin where the sample was taken
    donor: bool = False  # from the bundled donor photo, not from the template

    @property
    def gap(self) -> float:
        return float(np.max(self.bottom - self.top))


class Geometry(Protocol):
    @property
    def height(self) -> float: ...  # read-only: FaceGeometry is a frozen dataclass

    def to_face(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def to_image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray: ...


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _patch_at_scale(sample: MouthSample, height: float) -> tuple[np.ndarray, float]:
    """The patch resampled to the target face's scale where that is smaller (no aliasing: the sample is as sharp
    as the face around it), and the factor from patch pixels to the returned image's pixels."""
    per_pixel = 1.0 / (height * PITCH)  # patch pixels per target pixel
    if per_pixel <= 1.25:
        return sample.patch, 1.0
    size = (max(2, round(PATCH_W / per_pixel)), max(2, round(PATCH_H / per_pixel)))
    return cv2.resize(sample.patch, size, interpolation=cv2.INTER_AREA), size[0] / PATCH_W


def compose_interior(roi: np.ndarray, x0: int, y0: int, g: Geometry, u_edge: np.ndarray, top_edge: np.ndarray,
                     bottom_edge: np.ndarray, sample: MouthSample, skin: np.ndarray, lip_colour: np.ndarray,
                     rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Fill the parted lips in ``roi`` (BGR uint8 whose (0, 0) is image pixel (x0, y0)), in place.

    ``u_edge``, ``top_edge``, ``bottom_edge``: the target's inner-lip contour in the frame's face coordinates
    (pixels), corner to corner. Returns the coverage (alpha) over the filled box and the box's offset in ``roi``.
    """
    height = g.height
    shift = 4  # fixed-point bits: sub-pixel polygon edges, so the lip line is anti-aliased
    ring = np.concatenate([g.to_image(u_edge, top_edge), g.to_image(u_edge[::-1], bottom_edge[::-1])])
    h, w = roi.shape[:2]
    pad = 2
    bx0 = max(int(np.floor(ring[:, 0].min())) - x0 - pad, 0)
    by0 = max(int(np.floor(ring[:, 1].min())) - y0 - pad, 0)
    bx1 = min(int(np.ceil(ring[:, 0].max())) - x0 + pad + 1, w)
    by1 = min(int(np.ceil(ring[:, 1].max())) - y0 + pad + 1, h)
    if bx1 <= bx0 or by1 <= by0:
        return None
    origin = np.array([x0 + bx0, y0 + by0], np.float64)
    mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    cv2.fillPoly(mask, [np.round((ring - origin) * (1 << shift)).astype(np.int32)], (255,), cv2.LINE_AA, shift)
    if not mask.any():
        return None

    # Only the pixels the (feathered) opening covers are computed: a smile's box is mostly lips.
    alpha_box = cv2.GaussianBlur(mask, (3, 3), 0.6)
    ys, xs = np.nonzero(alpha_box)
    alpha = alpha_box[ys, xs].astype(np.float32)[:, None] / 255
    # Face coordinates of those pixels, and where each lies between the target's lips.
    u, v = g.to_face(np.stack([xs + (x0 + bx0), ys + (y0 + by0)], axis=-1).astype(np.float64))
    station = np.interp(u, u_edge, np.linspace(-1.0, 1.0, len(u_edge)))
    top = np.interp(u, u_edge, top_edge)
    bottom = np.interp(u, u_edge, bottom_edge)
    d_top, d_bottom = (v - top) / height, (bottom - v) / height  # face heights below the upper, above the lower lip
    wanted = np.maximum(bottom - top, 0) / height
    sample_top = np.interp(station, STATIONS, sample.top)
    sample_bottom = np.interp(station, STATIONS, sample.bottom)
    shown = np.minimum(wanted, np.maximum(sample_bottom - sample_top, 1e-4))
    # Upper part from under the upper lip, lower part from over the lower lip; the lips hide the sample's middle.
    ramp = 1.5 / height
    w_up = 1 - _smoothstep((d_top - sample.seam * shown) / ramp + 0.5)
    w_low = 1 - _smoothstep((d_bottom - (1 - sample.seam) * shown) / ramp + 0.5)
    w_throat = np.clip(1 - w_up - w_low, 0, 1)

    patch, scale = _patch_at_scale(sample, height)
    col = ((station * sample.half_width + HALF_U) / PITCH) * scale - 0.5
    upper = _remap_points(patch, col, ((sample_top + d_top - V_TOP) / PITCH) * scale - 0.5)
    lower = _remap_points(patch, col, ((sample_bottom - d_bottom - V_TOP) / PITCH) * scale - 0.5)
    # Light: the sample's colours as if lit like this face now (tempered for the donor, another person's skin).
    gain = np.clip(skin / np.maximum(sample.skin, 1.0), 0.5, 1.6) ** (0.8 if sample.donor else 1.0)
    # Below a throat, the lower part is the lower teeth, in the shadow of the upper ones.
    low_shade = 1 - 0.15 * np.clip((wanted - shown) / 0.02, 0, 1)
    interior = (upper * w_up[:, None] + lower * (w_low * low_shade)[:, None]) * gain.astype(np.float32)

    # Grain that changes from frame to frame like a camera's, yet the same for the same input (reproducible): on
    # whatever is synthesized or borrowed (throat, donor teeth), which has none of this camera's own.
    seed = int(roi[by0, bx0:bx1].sum(dtype=np.int64)) if rng is None else int(rng.integers(1 << 30))
    grain = _grain()[(ys + seed) % 64, (xs + seed // 64) % 64][:, None]
    if sample.donor:
        interior += grain * (1 - w_throat[:, None])
    if w_throat.max() > 0.01:
        interior += (_throat(u, v, top, bottom, wanted, shown, sample.seam, height, lip_colour) + grain) \
            * w_throat[:, None]
    box = roi[by0:by1, bx0:bx1]
    box[ys, xs] = np.clip(box[ys, xs] * (1 - alpha) + interior * alpha + 0.5, 0, 255).astype(np.uint8)
    coverage = np.zeros(alpha_box.shape, np.float32)
    coverage[ys, xs] = alpha[:, 0]
    return coverage, (bx0, by0)


def _remap_points(image: np.ndarray, x: np.ndarray, y: np.ndarray, row: int = 1024) -> np.ndarray:
    """Bilinear samples (N, 3) of ``image`` at N points (OpenCV's maps are 2-D and under 32767 a side)."""
    n = len(x)
    rows = -(-n // row)
    map_x = np.zeros(rows * row, np.float32)
    map_y = np.zeros(rows * row, np.float32)
    map_x[:n], map_y[:n] = x, y
    out = cv2.remap(image, map_x.reshape(rows, row), map_y.reshape(rows, row), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, image.shape[2])[:n].astype(np.float32)


def _throat(u: np.ndarray, v: np.ndarray, top: np.ndarray, bottom: np.ndarray, wanted: np.ndarray,
            shown: np.ndarray, seam: float, height: float, lip_colour: np.ndarray) -> np.ndarray:
    """A throat between the sample's upper and lower parts: deep red, darkest at its centre, a tongue at wide
    openings."""
    span_top = top + seam * shown * height
    span_bottom = bottom - (1 - seam) * shown * height
    span = np.maximum(span_bottom - span_top, 1e-3)
    depth = np.clip((v - span_top) / span, 0, 1)
    centre = 1 - np.abs(2 * depth - 1)  # 1 in the middle of the throat, 0 where the teeth are
    deep = lip_colour * np.array([0.20, 0.18, 0.36], np.float32)
    near = lip_colour * np.array([0.42, 0.38, 0.62], np.float32)
    colour = near + (deep - near) * centre[:, None].astype(np.float32)
    tongue_amount = np.clip((wanted - TONGUE_FROM) / 0.03, 0, 1)
    if tongue_amount.max() > 0:
        # Tongue: a soft rounded mound resting on the lower teeth, at most half the throat's height.
        half_width = np.maximum(np.abs(u).max(), 1.0) * 0.55
        rise = 1 - (u / half_width) ** 2
        surface = span_bottom - 0.45 * span * np.clip(rise, 0, 1)
        inside = np.clip((v - surface) / 2.0 + 0.5, 0, 1) * (rise > 0)
        tongue = lip_colour * np.array([0.50, 0.50, 0.78], np.float32)
        lit = 0.8 + 0.2 * np.clip((v - surface) / np.maximum(0.45 * span, 1.0), 0, 1)
        weight = (inside * tongue_amount)[:, None].astype(np.float32)
        colour = colour * (1 - weight) + tongue * (1.0 / lit)[:, None].astype(np.float32) * weight
    return colour.astype(np.float32)


@lru_cache(maxsize=1)
def _grain() -> np.ndarray:
    """A tile of camera-like grain (std 1.6 levels), made once: drawing fresh noise every frame costs more."""
    return np.random.default_rng(13).normal(0.0, 1.6, (64, 64)).astype(np.float32)
