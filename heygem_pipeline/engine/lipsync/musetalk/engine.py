"""The MuseTalk 1.5 engine: the user's downloaded weights, the reference's data path from the face box on.

The face box comes from the MediaPipe track, by the reference's rule on its 68 face points (``face_box``): the
face's widest points, its lowest point, and the upper edge mirrored about the nose (the bridge point the 68-point
scheme numbers 29); smoothed over 5 frames like Wav2Lip's; the reference's 10 px margin below is added by the crop.
Then, in batches of ``batch_size`` (the reference's 8): crop, VAE encode (the masked and the full face, noise from
a generator seeded by the output frame's index, so a rerun gives the same video), the UNet on the latents and the
frame's Whisper audio prompt, VAE decode, and the jaw-mode paste with the face parser. Frames without a usable face
pass through. The Whisper features of the whole voice are computed once per render (~46 KB a second of audio); the
prompts are cut from them batch by batch. The VAE posterior of each distinct crop and the face parser's labels of
each distinct frame are computed once per render (a template plays back and forth; a photo is one frame).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from heygem_pipeline.engine.audio.features import ScriptFeatures
from heygem_pipeline.engine.lipsync.base import LipSyncEngine, RenderItem
from heygem_pipeline.engine.lipsync.boxes import boxed_items
from heygem_pipeline.engine.lipsync.musetalk.model import MuseTalk, load_musetalk, missing_files
from heygem_pipeline.errors import HeygemError, ModelFileError
from heygem_pipeline.settings import DEFAULT_MUSETALK_BATCH

MODELS_VAR = "HEYGEM_MUSETALK_MODELS"
# MediaPipe face-mesh indices standing in for the reference's 68 points: the face oval's extremes (the jaw line's
# 0..16 span cheek to cheek; its lowest point is the chin, 68-point 8), and the nose bridge point 195 (68-point 29).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_BRIDGE = 195
NOISE_SEED = 20260301  # the latents' noise: seed + output frame index
CACHED_FRAMES = 256  # template frames whose posterior (64 KB) and labels (256 KB) a render keeps, at most


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The reference's box (x1, y1, x2, y2, float) of 478 MediaPipe landmarks in pixels, before the margin:
    ``y1 = max(0, nose.y − (chin.y − nose.y))``."""
    points = np.asarray(landmarks, np.float64)[:, :2]
    oval = points[list(FACE_OVAL)]
    bottom = float(oval[:, 1].max())
    nose = float(points[NOSE_BRIDGE, 1])
    return np.array([oval[:, 0].min(), max(0.0, nose - (bottom - nose)), oval[:, 0].max(), bottom])


def _raw_box(item: RenderItem) -> np.ndarray | None:
    if not item.face.found:
        return None
    box = face_box(item.face.landmarks)
    height, width = item.frame.shape[:2]
    return np.clip(box, 0, [width, height, width, height])


def resolve_models(models: str | os.PathLike[str] | None) -> Path:
    """The weights folder: ``models``, else ``$HEYGEM_MUSETALK_MODELS``; ``ModelFileError`` when there is none."""
    chosen = models or os.environ.get(MODELS_VAR, "").strip()
    if not chosen:
        raise ModelFileError("(no folder)", "the musetalk engine needs MuseTalk 1.5's weights",
                             f"download them (MuseTalk's README: musetalkV15/, sd-vae/, whisper/, face-parse-bisent/) "
                             f"and give the folder with --models, a campaign's models: or {MODELS_VAR}")
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise ModelFileError(folder, "is not a folder", "give the folder that holds musetalkV15/, sd-vae/, whisper/ "
                             "and face-parse-bisent/")
    return folder


def _digest(*parts: object) -> bytes:
    """A key for arrays and boxes: the same content gives the same key."""
    sha = hashlib.blake2b(digest_size=16)
    for part in parts:
        sha.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return sha.digest()


class _PosteriorCache:
    """The VAE posteriors of crops seen in this render, by content; the oldest are dropped past CACHED_FRAMES."""

    def __init__(self) -> None:
        self._found: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, crops: list[np.ndarray], compute: Callable[[list[np.ndarray]], tuple[torch.Tensor, torch.Tensor]]
            ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [_digest(crop) for crop in crops]
        new = {key: crop for key, crop in zip(keys, crops, strict=True) if key not in self._found}
        if new:
            mean, std = compute(list(new.values()))
            for i, key in enumerate(new):
                self._found[key] = (mean[i], std[i])
            while len(self._found) > CACHED_FRAMES:
                self._found.pop(next(iter(self._found)))
        pairs = [self._found[key] for key in keys]
        return torch.stack([m for m, _ in pairs]), torch.stack([s for _, s in pairs])


class MuseTalkEngine(LipSyncEngine):
    """Lip sync with MuseTalk 1.5 from the weights folder the user supplies (never downloaded). A missing folder or
    file raises ``ModelFileError`` here, before any work."""

    name = "musetalk"
    wants_gpu = True

    def __init__(self, models: str | os.PathLike[str] | None = None, device: str | None = None,
                 batch_size: int = DEFAULT_MUSETALK_BATCH, *, fp16: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.models = resolve_models(models)
        if problems := missing_files(self.models):
            raise problems[0]
        # As Wav2Lip's engine: the GPU when there is one (the engine wants one), a clear error for a GPU asked for
        # where torch sees none (not a CUDA error deep in the first batch).
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise HeygemError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
        self.batch_size, self.fp16 = batch_size, fp16
        self.model: MuseTalk | None = None

    def load(self) -> None:
        if self.model is None:
            self.model = load_musetalk(self.models, device=str(self.device), fp16=self.fp16)

    def render(self, items: Iterable[RenderItem], script: ScriptFeatures, fps: float) -> Iterator[np.ndarray]:
        self.load()
        model = self.model
        assert model is not None
        features = model.whisper_features(script.samples)
        # A template plays back and forth (a photo: one frame throughout), so the VAE's posterior of each crop and
        # the face parser's labels of each frame are kept for the render: the same values, computed once.
        posteriors = _PosteriorCache()
        labels: dict[bytes, np.ndarray] = {}
        boxed = boxed_items(items, _raw_box)
        while chunk := list(itertools.islice(boxed, self.batch_size)):
            faces = [(item, box) for item, box in chunk if box is not None]
            generated: dict[int, np.ndarray] = {}
            if faces:
                crops = [model.crop(item.frame, box) for item, box in faces]
                mean, std = posteriors.get(crops, lambda new: model.posterior(np.stack(new)))
                indices = [item.index for item, _ in faces]
                latents = model.latents(mean, std, model.noise(indices, NOISE_SEED))
                prompts = model.prompts_at(features, len(script.samples), indices, fps)
                decoded = model.decode(model.denoise(latents, prompts))
                generated = {item.index: face for (item, _), face in zip(faces, decoded, strict=True)}
            for item, box in chunk:
                if box is None:
                    yield item.frame
                    continue
                key = _digest(item.frame, box)
                if (found := labels.get(key)) is None:
                    found = labels[key] = model.labels(item.frame, box)
                    if len(labels) > CACHED_FRAMES:
                        labels.pop(next(iter(labels)))
                yield model.paste(item.frame, generated[item.index], box, labels=found)
