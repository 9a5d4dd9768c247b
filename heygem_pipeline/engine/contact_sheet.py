"""Contact sheets of rendered mouths: the template's mouth, then the output's at the loudest and quietest moments.

The sheet is collected while a video renders (``SheetCollector``): the renderer hands it the template frame of
the loudest output frame before the engine draws on it, and every chosen output frame after; only small upright
crops around the mouth are kept. Frames are chosen from the voice itself (RMS per frame interval), so the sheet
shows what a viewer hears as the loudest speech and the quietest moments (pauses, where the mouth must close).
"""

from __future__ import annotations

import cv2
import numpy as np

from heygem_pipeline.engine.face.landmarks import face_height
from heygem_pipeline.engine.media.frames import i420_box

TILE = 160  # pixels of one mouth tile
CROP_SHARE = 0.55  # side of the crop as a share of face height: both lips, the chin's top and the cheeks' edge
CAPTION = 18
PICKS = 3


def frame_levels(samples: np.ndarray, n_frames: int, fps: float, rate: int = 16000) -> np.ndarray:
    """RMS level in dB of each output frame's interval of the voice (floored at -80 dB)."""
    edges = np.minimum(np.round(np.arange(n_frames + 1) / fps * rate).astype(np.int64), len(samples))
    power = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    mean = (power[edges[1:]] - power[edges[:-1]]) / counts
    return np.maximum(10 * np.log10(mean + 1e-12), -80.0)


def _spaced(order: np.ndarray, count: int, spacing: int) -> list[int]:
    chosen: list[int] = []
    for index in order:
        if all(abs(int(index) - c) >= spacing for c in chosen):
            chosen.append(int(index))
        if len(chosen) == count:
            break
    return chosen


def pick_frames(levels: np.ndarray, count: int = PICKS, spacing: int = 6) -> tuple[list[int], list[int]]:
    """Output frames at the loudest and at the quietest moments (at least ``spacing`` frames apart).

    The quietest are taken between the first and the last loud frame, so they are pauses and quiet speech
    inside the script rather than the leading and trailing silence.
    """
    if len(levels) == 0:
        return [], []
    loudest = _spaced(np.argsort(-levels, kind="stable"), count, spacing)
    voiced = np.flatnonzero(levels > levels.max() - 30)
    lo, hi = (int(voiced[0]), int(voiced[-1]) + 1) if len(voiced) > 1 else (0, len(levels))
    inner = np.arange(lo, hi)
    quietest = _spaced(inner[np.argsort(levels[inner], kind="stable")], count, spacing)
    return sorted(loudest), sorted(quietest)


def mouth_tile(frame: np.ndarray, landmarks: np.ndarray, pix_fmt: str = "bgr24", size: int = TILE) -> np.ndarray:
    """An upright ``size``² BGR crop around the mouth of one frame (BGR, or OpenCV I420 with ``yuv420p``)."""
    points = landmarks[:, :2].astype(np.float64)
    centre = (points[13] + points[14] + points[61] + points[291]) / 4
    side = CROP_SHARE * float(face_height(landmarks))
    axis = points[263] - points[33]
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    reach = int(np.ceil(side * 0.75)) + 2  # covers the rotated square
    x0, y0 = int(centre[0]) - reach, int(centre[1]) - reach
    x1, y1 = int(centre[0]) + reach, int(centre[1]) + reach
    if pix_fmt == "yuv420p":
        box, (x0, y0, x1, y1) = i420_box(frame, x0, y0, x1, y1)
        region = cv2.cvtColor(box, cv2.COLOR_YUV2BGR_I420) if box.size else np.zeros((0, 0, 3), np.uint8)
    else:
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
        region = frame[y0:y1, x0:x1]
    if region.size == 0 or side < 4:
        return np.zeros((size, size, 3), np.uint8)
    matrix: np.ndarray = cv2.getRotationMatrix2D((float(centre[0] - x0), float(centre[1] - y0)), angle, size / side)
    matrix[:, 2] += np.array([size / 2, size / 2]) - np.array([centre[0] - x0, centre[1] - y0])
    return cv2.warpAffine(region, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def compose_sheet(tiles: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Tiles side by side, each with its caption underneath, with a gap after the first (the template)."""
    if not tiles:
        return np.zeros((TILE + CAPTION, TILE, 3), np.uint8)
    columns = []
    for number, (caption, tile) in enumerate(tiles):
        column = np.full((tile.shape[0] + CAPTION, tile.shape[1], 3), 24, np.uint8)
        column[: tile.shape[0]] = tile
        cv2.putText(column, caption, (4, tile.shape[0] + CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (235, 235, 235), 1, cv2.LINE_AA)
        columns.append(column)
        columns.append(np.full((column.shape[0], 10 if number == 0 else 2, 3), 24, np.uint8))
    return np.hstack(columns[:-1])


class SheetCollector:
    """Collects the sheet's tiles during a render (see the module doc)."""

    def __init__(self, samples: np.ndarray, sample_rate: int, n_frames: int, fps: float,
                 pix_fmt: str = "bgr24") -> None:
        self.levels = frame_levels(samples, n_frames, fps, sample_rate)
        self.loudest, self.quietest = pick_frames(self.levels)
        self.template_index = self.loudest[0] if self.loudest else -1
        self.pix_fmt = pix_fmt
        self.tiles: dict[int, np.ndarray] = {}
        self.template: np.ndarray | None = None

    def before(self, index: int, frame: np.ndarray, landmarks: np.ndarray, found: bool) -> None:
        """The template frame of output ``index``, before the engine draws on it."""
        if index == self.template_index and found:
            self.template = mouth_tile(frame, landmarks, self.pix_fmt)

    def after(self, index: int, frame: np.ndarray, landmarks: np.ndarray, found: bool) -> None:
        """Output frame ``index`` as rendered."""
        if found and (index in self.loudest or index in self.quietest):
            self.tiles[index] = mouth_tile(frame, landmarks, self.pix_fmt)

    def image(self) -> np.ndarray:
        tiles: list[tuple[str, np.ndarray]] = []
        if self.template is not None:
            tiles.append(("template", self.template))
        for label, indices in (("loud", self.loudest), ("quiet", self.quietest)):
            tiles += [(f"{label} {self.levels[i]:.0f} dB", self.tiles[i]) for i in indices if i in self.tiles]
        return compose_sheet(tiles)

    def png(self) -> bytes:
        ok, data = cv2.imencode(".png", self.image(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise RuntimeError("could not encode the contact sheet")
        return data.tobytes()


def sheet_jpeg(png: bytes, quality: int = 85) -> bytes:
    """The sheet as a JPEG (a sixth of the PNG's size: for metadata stored with every run's events)."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode the contact sheet")
    return data.tobytes()
