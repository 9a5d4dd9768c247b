"""Face boxes over time for the networks that crop a face: each frame's box smoothed over a centred window of
neighbours, streamed with a few frames of look-ahead."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from heygem_pipeline.engine.lipsync.base import RenderItem

SMOOTH_WINDOW = 5  # frames each box is averaged over (Wav2Lip's reference T=5)
MIN_BOX_SIDE = 8  # px; a smaller box is no face a network can use, so the frame passes through

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, end-exclusive
RawBox = Callable[[RenderItem], np.ndarray | None]  # an item's unsmoothed float box (None: no face)


def _window_mean(boxes: list[np.ndarray | None]) -> np.ndarray:
    return np.mean([b for b in boxes if b is not None], axis=0)


def smooth_boxes(boxes: np.ndarray, valid: np.ndarray | None = None, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Each valid box averaged with the valid boxes among its centred ``window`` neighbours (fewer at the ends).

    The reference averages over the next ``window`` frames, which makes the box lead the face by two frames; a
    centred window has no lead. Invalid rows (no face) are left as they are and never averaged in.
    """
    boxes = np.asarray(boxes, np.float64)
    valid = np.ones(len(boxes), bool) if valid is None else np.asarray(valid, bool)
    half = window // 2
    out = boxes.copy()
    for i in np.flatnonzero(valid):
        lo, hi = max(0, i - half), min(len(boxes), i + half + 1)
        out[i] = _window_mean([boxes[j] if valid[j] else None for j in range(lo, hi)])
    return out


def _int_box(box: np.ndarray) -> Box | None:
    # Truncation, as the reference's integer box array does when the smoothed mean is stored back into it.
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        return None
    return x0, y0, x1, y1


def boxed_items(items: Iterable[RenderItem], raw_box: RawBox, window: int = SMOOTH_WINDOW
                ) -> Iterator[tuple[RenderItem, Box | None]]:
    """Each item with its smoothed integer box (None: no usable face), streamed with ``window // 2`` look-ahead.

    Same numbers as ``smooth_boxes`` over the whole sequence, without holding it.
    """
    half = window // 2
    pending: deque[tuple[RenderItem, np.ndarray | None]] = deque()
    history: deque[np.ndarray | None] = deque(maxlen=half)

    def emit() -> tuple[RenderItem, Box | None]:
        item, raw = pending.popleft()
        box = None
        if raw is not None:
            ahead = [b for _, b in itertools.islice(pending, half)]
            box = _int_box(_window_mean([*history, raw, *ahead]))
        history.append(raw)
        return item, box

    for item in items:
        pending.append((item, raw_box(item)))
        if len(pending) > half:
            yield emit()
    while pending:
        yield emit()
