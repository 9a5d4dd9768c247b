"""Offline demo media: a talking-head presenter template made from a bundled public-domain photo.

The demo command and the tests need a presenter template without downloads or shipped binaries. scikit-image
bundles ``astronaut`` (NASA portrait of Eileen Collins, public domain, 512×512 RGB), a frontal face that MediaPipe
tracks reliably. It is composited onto a studio-like backdrop and moved with slow, natural head motion (sway, nod,
slight zoom) so trackers and renderers see a realistic, non-static template.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.frames import EncodeSettings, FrameWriter
from heygem_pipeline.settings import DEFAULT_FPS

# Where the astronaut photo is placed: its height as a share of the frame height, and its bottom edge flush with
# the frame's bottom like a presenter standing in front of the camera. 0.8 gives a face box ≈ 0.16 of the frame
# height (≈120 px at 720p), a typical presenter size and the one the tracking notes were measured on.
_PORTRAIT_HEIGHT_SHARE = 0.8


@lru_cache(maxsize=1)
def _astronaut_bgr() -> np.ndarray:
    from skimage import data  # imported lazily: only the demo and tests need scikit-image's sample data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _backdrop(width: int, height: int) -> np.ndarray:
    """A soft vertical blue-grey gradient with a gentle vignette, like a studio backdrop."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    top, bottom = np.array([92, 74, 58], np.float32), np.array([48, 38, 30], np.float32)  # BGR
    base = top[None, None, :] * (1.0 - y[..., None]) + bottom[None, None, :] * y[..., None]
    vignette = 1.0 - 0.25 * (x**2)[..., None]
    return np.clip(base * vignette, 0, 255).astype(np.uint8)


def _layer(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The presenter layer at frame size: colour, feathered alpha (float32 0..1), and the face centre (x, y)."""
    photo = _astronaut_bgr()
    side = max(2, round(height * _PORTRAIT_HEIGHT_SHARE))
    side = min(side, width)
    photo = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC)
    # Feathered edges so the photo blends into the backdrop instead of showing a hard rectangle.
    alpha = np.ones((side, side), np.float32)
    feather = max(1, side // 10)
    ramp = np.linspace(0.0, 1.0, feather, dtype=np.float32)
    alpha[:feather, :] *= ramp[:, None]
    alpha[:, :feather] *= ramp[None, :]
    alpha[:, -feather:] *= ramp[::-1][None, :]
    colour = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.float32)
    x0, y0 = (width - side) // 2, height - side
    colour[y0:, x0 : x0 + side] = photo
    mask[y0:, x0 : x0 + side] = alpha
    # The face in the 512 px photo is centred near (226, 128) (measured with the full-range face detector).
    centre = np.array([x0 + side * 226 / 512, y0 + side * 128 / 512], np.float64)
    return colour, mask, centre


def _composite(background: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    alpha = mask[..., None]
    return (colour.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)


def portrait(width: int, height: int) -> np.ndarray:
    """A presenter frame (BGR uint8, ``height``×``width``): the astronaut portrait on a studio backdrop."""
    colour, mask, _ = _layer(width, height)
    return _composite(_backdrop(width, height), colour, mask)


def head_motion(t: float, centre: np.ndarray, height: int) -> np.ndarray:
    """The 2×3 affine matrix of the presenter's head pose at time ``t`` (seconds).

    Incommensurate slow frequencies so the motion never visibly repeats: sideways sway (≈1 % of the height),
    a small nod, a tilt of about a degree and a slow breathing zoom of ±2 %.
    """
    sway = 0.012 * height * math.sin(2 * math.pi * 0.23 * t)
    nod = 0.006 * height * math.sin(2 * math.pi * 0.61 * t + 0.7)
    tilt = 1.2 * math.sin(2 * math.pi * 0.17 * t + 1.3)
    zoom = 1.0 + 0.02 * math.sin(2 * math.pi * 0.11 * t)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), tilt, zoom)
    matrix[0, 2] += sway
    matrix[1, 2] += nod
    return matrix


def write_template_video(path: str | os.PathLike[str], seconds: float, width: int = 1280, height: int = 720,
                         fps: float = DEFAULT_FPS, motion: bool = True, settings: EncodeSettings | None = None) -> Path:
    """Write an H.264 MP4 presenter template of ``seconds`` at ``fps``, frames streamed into the encoder."""
    if width % 2 or height % 2:
        raise ValueError("width and height must be even for H.264 yuv420p")
    background = _backdrop(width, height)
    colour, mask, centre = _layer(width, height)
    frames = max(1, round(seconds * fps))
    still = _composite(background, colour, mask)
    with FrameWriter(path, width, height, fps, settings=settings) as writer:
        for index in range(frames):
            if not motion:
                writer.write(still)
                continue
            matrix = head_motion(index / fps, centre, height)
            moved = cv2.warpAffine(colour, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT)
            moved_mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT)
            writer.write(_composite(background, moved, moved_mask))
    return Path(path)


def write_still(path: str | os.PathLike[str], width: int = 1280, height: int = 720) -> Path:
    """Write a presenter photo; the format follows the extension (png, jpg, webp). Written atomically."""
    path = Path(path)
    image = portrait(width, height)
    with atomic_output(path) as tmp:
        ok, encoded = cv2.imencode(path.suffix.lower() or ".png", image)
        if not ok:
            raise ValueError(f"cannot encode an image as {path.suffix!r}")
        tmp.write_bytes(encoded.tobytes())
    return path
