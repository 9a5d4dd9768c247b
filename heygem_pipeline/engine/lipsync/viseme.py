"""The default, weights-free engine: mouth shapes from the voice, drawn by deforming the template's own face, with
the mouth's interior from the avatar's own bank of real mouths (or the donor's, for a template whose mouth never
opens)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from heygem_pipeline.engine.audio.features import ScriptFeatures, frame_count
from heygem_pipeline.engine.audio.visemes import mouth_at, mouth_track, sample_track
from heygem_pipeline.engine.lipsync.base import LipSyncEngine, RenderItem
from heygem_pipeline.engine.mouth.warp import render_mouth, render_mouth_i420


class VisemeEngine(LipSyncEngine):
    name = "viseme"
    wants_gpu = False
    frame_format = "yuv420p"  # only the lower face changes: convert that box, not whole frames
    uses_mouth_bank = True

    def render(self, items: Iterable[RenderItem], script: ScriptFeatures, fps: float) -> Iterator[np.ndarray]:
        track = script.visemes
        if track is None:  # features cached without a mouth track (e.g. by an older version): compute it now
            track = mouth_track(script.samples, script.sample_rate, script.language)
        choice: np.ndarray | None = None
        for item in items:
            if not item.face.found:
                yield item.frame  # no face known for this template frame: leave it as it is
                continue
            params = mouth_at(track, item.index, fps)
            sample = None
            if item.mouths is not None:
                if choice is None:  # samples for the whole script at once: the choice is smoothed over time
                    choice = item.mouths.select(sample_track(track, frame_count(script.duration, fps), fps))
                sample = item.mouths.sample(int(choice[min(item.index, len(choice) - 1)]))
            if item.frame.ndim == 2:  # I420 from the renderer: drawn in place
                yield render_mouth_i420(item.frame, item.face.landmarks, params, sample)
            else:
                yield render_mouth(item.frame, item.face.landmarks, params, sample)
