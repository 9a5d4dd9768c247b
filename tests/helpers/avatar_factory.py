"""Offline avatar test media: thin wrappers over ``heygem_pipeline.demo_media`` at test sizes (640×360).

The presenter is scikit-image's bundled ``astronaut`` photo (public-domain NASA portrait), so nothing is
downloaded and every test sees the same face.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from heygem_pipeline.demo_media import portrait, write_still, write_template_video
from heygem_pipeline.engine.media.frames import EncodeSettings

TEST_WIDTH, TEST_HEIGHT = 640, 360
FAST = EncodeSettings(crf=20, preset="ultrafast")  # test media only needs to decode, not to look good


def make_portrait(size: tuple[int, int] = (TEST_WIDTH, TEST_HEIGHT)) -> np.ndarray:
    """A BGR presenter frame of ``size`` = (width, height)."""
    width, height = size
    return portrait(width, height)


def make_template_video(path: str | os.PathLike[str], seconds: float = 2.0, width: int = TEST_WIDTH,
                        height: int = TEST_HEIGHT, fps: float = 25, motion: bool = True) -> Path:
    """An MP4 talking-head template with natural head motion (or a frozen one with ``motion=False``)."""
    return write_template_video(path, seconds, width=width, height=height, fps=fps, motion=motion, settings=FAST)


def make_still(path: str | os.PathLike[str], width: int = TEST_WIDTH, height: int = TEST_HEIGHT) -> Path:
    """A presenter photo; the format follows the extension."""
    return write_still(path, width, height)
