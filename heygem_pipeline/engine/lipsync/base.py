"""The interface every lip-sync engine implements.

The renderer owns timing (how many output frames, which template frame each one shows, looping), decoding,
encoding and muxing. An engine only turns a stream of template frames with their face observations into
a stream of frames whose mouth matches the audio at each output index. Engines are loaded once per process
(``load``) and reused for every pair, so a Dagster resource can keep one warm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # the bank module imports this one
    from heygem_pipeline.engine.mouth.bank import MouthBank
from heygem_pipeline.engine.audio.features import ScriptFeatures
from heygem_pipeline.engine.face.landmarks import FaceFrame


@dataclass(frozen=True)
class RenderItem:
    """One output frame to produce: its index in the output (and so in the audio), the template frame, the face."""

    index: int
    frame: np.ndarray  # uint8, in the engine's frame_format: BGR (H, W, 3) or I420 (H*3/2, W)
    face: FaceFrame
    mouths: MouthBank | None = None  # the avatar's mouth bank, the same object for every item


class LipSyncEngine(ABC):
    """A lip-sync engine. Subclasses set ``name`` and ``wants_gpu`` and implement ``render``."""

    name: ClassVar[str]
    wants_gpu: ClassVar[bool] = False
    # The frames the renderer hands over and expects back: "bgr24" (H, W, 3) or "yuv420p" (OpenCV I420,
    # (H*3/2, W)). An engine that changes a small region saves two full-frame colour conversions with yuv420p.
    frame_format: ClassVar[str] = "bgr24"
    uses_mouth_bank: ClassVar[bool] = False  # whether render items should carry the avatar's mouth bank

    def load(self) -> None:  # noqa: B027 - optional hook, most weights-free engines need nothing
        """Load models once; called before the first render, safe to call again."""

    @abstractmethod
    def render(self, items: Iterable[RenderItem], script: ScriptFeatures, fps: float) -> Iterator[np.ndarray]:
        """Yield one BGR frame per item, in order, with the mouth matching the audio at ``item.index / fps``."""
