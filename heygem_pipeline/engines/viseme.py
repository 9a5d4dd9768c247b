"""The default, weights-free engine: mouth shapes from the voice, drawn by deforming the template's own face."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from heygem_pipeline.engines.base import LipSyncEngine, RenderItem, ScriptFeatures
from heygem_pipeline.mouth import render_mouth
from heygem_pipeline.visemes import TRACK_RATE, mouth_track


class VisemeEngine(LipSyncEngine):
    name = "viseme"
    wants_gpu = False

    def render(self, items: Iterable[RenderItem], script: ScriptFeatures, fps: float) -> Iterator[np.ndarray]:
        track = script.visemes
        if track is None:  # features cached without a mouth track (e.g. by an older version): compute it now
            track = mouth_track(script.samples, script.sample_rate, script.language)
        positions = np.arange(len(track))
        for item in items:
            if not item.face.found:
                yield item.frame  # no face known for this template frame: leave it as it is
                continue
            # The frame shows the middle of its display interval, so sound and picture line up to the frame.
            t = (item.index + 0.5) / fps * TRACK_RATE
            params = np.array([np.interp(t, positions, track[:, k]) for k in range(track.shape[1])], np.float32)
            yield render_mouth(item.frame, item.face.landmarks, params)
