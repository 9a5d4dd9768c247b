"""Pasting a generated face back into its frame the way MuseTalk 1.5 does (``parsing_mode="jaw"``).

The generated 256×256 face is resized to the face box (cv2 INTER_LINEAR). Around the box a square crop of side
``2s`` (``s = int(max(w, h) // 2 * 1.5)``, centred on the box) is face-parsed at 512×512; the parsed skin is grown
downwards (a cone-shaped dilation, so the new jaw line may reach lower than the old one), kept narrow on the cheeks
(an elliptical erosion outside the middle ``256 ± cheek_width`` columns), the nose removed and the mouth and lips
added. That 0/255 mask is resized to the crop (PIL BICUBIC), limited to the face box and the crop's lower half,
feathered with a Gaussian blur and used as the 8-bit alpha of a PIL paste of the crop (the original crop with the
face pasted over the box) into the frame.

Every resampling, blur and composite is the same cv2/PIL call with the same arguments as the reference, which is
what makes the result bit-identical: PIL's paste rounds its alpha blend in integers, and its BICUBIC resize and
cv2's GaussianBlur have their own fixed-point arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import cv2
import numpy as np
from PIL import Image

from .bisenet import PARSE_SIZE, BiSeNet, parse_face

EXPAND = 1.5  # crop side / face box side (reference default of ``get_image``)
CHEEK_WIDTH = 90  # columns either side of the parse map's centre that are not eroded (``--left/right_cheek_width``)
UPPER_BOUNDARY_RATIO = 0.5  # the top half of the crop always keeps the original pixels
BLUR_RATIO = 0.05  # Gaussian kernel side / crop width (``get_image``, scripts/inference.py)
REALTIME_BLUR_RATIO = 0.1  # the same for the realtime path's precomputed masks (``get_image_prepare_material``)
SKIN, NOSE, MOUTH_AND_LIPS = 1, 10, (11, 12, 13)  # face-parsing classes the jaw mask is built from
_CONE_HEIGHT, _TAIL_HEIGHT = 21, 12  # the dilation kernel: a downward-widening cone, then a vertical band


Box = Sequence[int]  # (x1, y1, x2, y2) in frame pixels, x2/y2 exclusive


def crop_box(box: Box, expand: float = EXPAND) -> tuple[int, int, int, int]:
    """The square crop around ``box`` that is parsed and blended: centre ``((x1+x2)//2, (y1+y2)//2)``, half side
    ``s = int(max(w, h) // 2 * expand)``. It may reach outside the frame (PIL pads the crop with black there)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return cx - s, cy - s, cx + s, cy + s


@cache
def _jaw_kernels(cheek_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cone dilation kernel (33×33), the cheek erosion ellipse (35×3) and the 512×512 cheek-columns mask."""
    side = _CONE_HEIGHT + _TAIL_HEIGHT
    centre = side // 2
    cone = np.zeros((side, side), dtype=np.uint8)
    for row in range(_CONE_HEIGHT // 2, _CONE_HEIGHT):  # rows above the middle stay empty: growth is downwards
        half = row - _CONE_HEIGHT // 2  # a row of width 2·half + 1 centred on the middle column
        cone[row, centre - half : centre + half + 1] = 1
    base_half = int(cone[_CONE_HEIGHT - 1].sum()) // 2
    cone[_CONE_HEIGHT:, max(0, centre - base_half) : min(side, centre + base_half + 1)] = 1
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))
    cheeks = np.zeros((PARSE_SIZE, PARSE_SIZE), dtype=np.uint8)
    middle = PARSE_SIZE // 2
    cv2.rectangle(cheeks, (0, 0), (middle - cheek_width, PARSE_SIZE), 255, -1)
    cv2.rectangle(cheeks, (middle + cheek_width, 0), (PARSE_SIZE, PARSE_SIZE), 255, -1)
    for array in (cone, ellipse, cheeks):
        array.flags.writeable = False
    return cone, ellipse, cheeks


def jaw_mask(labels: np.ndarray, *, cheek_width: int = CHEEK_WIDTH) -> np.ndarray:
    """The 0/255 uint8 mask [512,512] of a label map: the skin dilated by the cone (eroded again on the cheeks,
    outside ``256 ± cheek_width``) without the nose, plus the mouth and both lips."""
    labels = np.asarray(labels)
    if labels.shape != (PARSE_SIZE, PARSE_SIZE):
        raise ValueError(f"a label map is {PARSE_SIZE}×{PARSE_SIZE}, got shape {labels.shape}")
    cone, ellipse, cheeks = _jaw_kernels(int(cheek_width))
    skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
    grown = cv2.dilate(skin, cone, iterations=1)
    narrowed = cv2.erode(grown, ellipse, iterations=2)
    region = cv2.bitwise_or(cv2.bitwise_and(narrowed, cheeks), cv2.bitwise_and(grown, cv2.bitwise_not(cheeks)))
    keep = ((region == 255) & (labels != NOSE)) | np.isin(labels, MOUTH_AND_LIPS)
    return np.where(keep, 255, 0).astype(np.uint8)


def crop_mask(labels: np.ndarray, size: tuple[int, int], *, cheek_width: int = CHEEK_WIDTH) -> np.ndarray:
    """The jaw mask of ``labels`` resized to the crop's ``size`` = (width, height) with PIL BICUBIC (the resize
    default for an 8-bit image), uint8 [height, width]: what the reference's ``face_seg`` returns."""
    return np.array(Image.fromarray(jaw_mask(labels, cheek_width=cheek_width)).resize(size))


def blend_mask(
    labels: np.ndarray,
    box: Box,
    *,
    expand: float = EXPAND,
    cheek_width: int = CHEEK_WIDTH,
    upper_boundary_ratio: float = UPPER_BOUNDARY_RATIO,
    blur_ratio: float = BLUR_RATIO,
) -> np.ndarray:
    """The 8-bit alpha [2s,2s] uint8 that pastes the crop around ``box``: the jaw mask of ``labels`` (the crop's
    512×512 label map) resized to the crop (PIL BICUBIC), zero outside the face box and in the crop's top half,
    feathered with ``cv2.GaussianBlur`` (kernel ``int(blur_ratio · width // 2 * 2) + 1``, sigma from the size)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    xs, ys, xe, ye = crop_box(box, expand)
    size = (xe - xs, ye - ys)
    full = Image.fromarray(crop_mask(labels, size, cheek_width=cheek_width))
    inner = (x1 - xs, y1 - ys, x2 - xs, y2 - ys)
    boxed = Image.new("L", size, 0)
    boxed.paste(full.crop(inner), inner)
    width, height = size
    top = int(height * upper_boundary_ratio)
    lower = Image.new("L", size, 0)
    lower.paste(boxed.crop((0, top, width, height)), (0, top))
    kernel = int(blur_ratio * width // 2 * 2) + 1
    return cv2.GaussianBlur(np.array(lower), (kernel, kernel), 0)


def crop_labels(parser: BiSeNet, frame_bgr: np.ndarray, box: Box, *, expand: float = EXPAND) -> np.ndarray:
    """The 512×512 label map of the crop around ``box`` (PIL's crop: black where it leaves the frame)."""
    rgb = Image.fromarray(np.ascontiguousarray(frame_bgr[:, :, ::-1]))
    return parse_face(parser, rgb.crop(crop_box(box, expand)))


def paste(
    frame_bgr: np.ndarray,
    face_bgr: np.ndarray,
    box: Box,
    *,
    parser: BiSeNet | None = None,
    labels: np.ndarray | None = None,
    expand: float = EXPAND,
    cheek_width: int = CHEEK_WIDTH,
    blur_ratio: float = BLUR_RATIO,
) -> np.ndarray:
    """``frame_bgr`` (H×W×3 uint8, not modified) with ``face_bgr`` (the generated face, any size, resized to the
    box with cv2 INTER_LINEAR) blended in over ``box`` = (x1, y1, x2, y2), as a new array: the reference's
    ``get_image(..., mode="jaw")``.

    The mask comes from ``labels`` (the crop's 512×512 label map, when known) or else from running ``parser`` (a
    loaded BiSeNet) on the crop of ``frame_bgr``; one of the two is required. The labels depend only on the frame and
    the box, so a caller looping over a ping-pong cycle can parse each avatar frame once (``crop_labels``) and pass
    ``labels``: the output is the same.
    """
    if (parser is None) == (labels is None):
        raise ValueError("paste needs exactly one of parser= (a loaded BiSeNet) or labels= (a 512×512 label map)")
    if labels is None:
        assert parser is not None
        labels = crop_labels(parser, frame_bgr, box, expand=expand)
    alpha = blend_mask(labels, box, expand=expand, cheek_width=cheek_width, blur_ratio=blur_ratio)
    return paste_with_mask(frame_bgr, face_bgr, box, alpha, expand=expand)


def paste_with_mask(
    frame_bgr: np.ndarray, face_bgr: np.ndarray, box: Box, alpha: np.ndarray, *, expand: float = EXPAND
) -> np.ndarray:
    """``frame_bgr`` with the crop around ``box`` (the original crop, ``face_bgr`` resized over the box with cv2
    INTER_LINEAR) composited in through ``alpha`` (the crop's 8-bit mask from ``blend_mask``) by PIL's paste: the
    reference's ``get_image`` after its mask, and its realtime ``get_image_blending``."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty face box {tuple(box)}")
    crop = crop_box(box, expand)
    xs, ys, xe, ye = crop
    if alpha.shape != (ye - ys, xe - xs):
        raise ValueError(f"the mask of crop {crop} is {ye - ys}×{xe - xs}, got shape {alpha.shape}")
    face = cv2.resize(np.ascontiguousarray(face_bgr, dtype=np.uint8), (x2 - x1, y2 - y1))
    body = Image.fromarray(np.ascontiguousarray(frame_bgr[:, :, ::-1]))
    large = body.crop(crop)
    large.paste(Image.fromarray(np.ascontiguousarray(face[:, :, ::-1])), (x1 - xs, y1 - ys, x2 - xs, y2 - ys))
    body.paste(large, (xs, ys), Image.fromarray(np.ascontiguousarray(alpha, dtype=np.uint8)))
    return np.ascontiguousarray(np.asarray(body)[:, :, ::-1])
