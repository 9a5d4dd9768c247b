"""The Wav2Lip engine: the public generator weights the user supplies, with the reference preprocessing.

The weights only work on inputs prepared exactly as the reference ``inference.py`` prepares them (see
``shared/reference/wav2lip/FACTS.md``), so everything up to the network is reproduced step by step:

1. a face box per frame in the reference detector's convention (S3FD: brow line to chin, cheek to cheek),
   here derived from our MediaPipe landmarks (``face_box``);
2. padded 10 px at the bottom (the reference's ``--pads 0 10 0 0``) and clipped to the frame (``pad_box``);
3. each box averaged over a 5-frame window (``boxes.smooth_boxes``);
4. the crop resized to 96×96 BGR, a copy with rows 48..95 zeroed, ``concat([masked, crop]) / 255`` → B×6×96×96
   (``face_input``), with the frame's 80×16 mel window → B×1×80×16.

Compositing is where this engine deliberately differs: the reference pastes the 96×96 output back as a hard
rectangle, whose edge is the most reported Wav2Lip flaw. Here the output is blended through a feathered ellipse
over the lower face that is exactly zero at the box's border (``lower_face_mask``), after a colour shift that
matches the generated skin to the template's in the feather band (``composite``). Pixels outside the ellipse are
left bit for bit as they were.

Streaming: items are consumed in batches of ``batch_size`` plus the 2 frames of look-ahead the centred smoothing
window needs. On CPU a batch is prepared, inferred and composited in turn (``batch_size + 2`` frames held). On a
GPU the work is pipelined so the GPU never waits for Python: a worker thread prepares batch k+1 (crops, pinned
host tensors) while batch k runs on the GPU and batch k-1 is composited and handed to the encoder — at most
three batches of frames are held.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Generic, Literal, TypeVar

import cv2
import numpy as np
import torch

from heygem_pipeline.engine.audio.features import ScriptFeatures, mel_chunk_batch
from heygem_pipeline.engine.lipsync.base import LipSyncEngine, RenderItem
from heygem_pipeline.engine.lipsync.boxes import SMOOTH_WINDOW, Box
from heygem_pipeline.engine.lipsync.boxes import boxed_items as smoothed_boxes
from heygem_pipeline.engine.lipsync.wav2lip import IMG_SIZE, load_wav2lip_checkpoint, resolve_checkpoint
from heygem_pipeline.errors import HeygemError
from heygem_pipeline.settings import DEFAULT_WAV2LIP_BATCH

# MediaPipe face-mesh indices. The face oval's x extent is the cheek-to-cheek width an S3FD box spans; the upper
# contour of both eyebrows is where S3FD boxes of frontal faces start (they exclude most of the forehead, unlike
# the oval, whose top point 10 is near the hairline); the box ends at the chin, the oval's lowest point. Measured
# on the demo presenter this box is within 3 % of square, as S3FD's are.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
BROW_TOP = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)

PADS = (0, 10, 0, 0)  # top, bottom, left, right in pixels: the reference's default --pads
CPU_CHUNK = 16  # frames per forward pass on CPU: bigger batches fall out of cache and run 2-5× slower per frame
MAX_COLOR_SHIFT = 20.0  # grey levels; a larger mismatch is content (an open mouth), not a colour cast

# The blend mask, in box-relative coordinates: an ellipse over the lower face. The network regenerates rows
# 48..95 (the lower half); the ellipse starts a little above that (0.41) so the upper lip, which sits right at
# the half-way line on small faces, is fully inside; it ends 3 % short of the bottom (the padded chin) and 8 %
# short of the sides, so the mask is exactly 0 along the whole border. Inside 65 % of the radius the generated
# face is used as it is.
MASK_CENTRE = (0.5, 0.69)
MASK_AXES = (0.42, 0.28)
MASK_INNER = 0.65

_T = TypeVar("_T")
# What _Prefetch's worker hands its consumer: a value, its error, or the end.
_Message = tuple[Literal["value"], _T] | tuple[Literal["error"], BaseException] | tuple[Literal["end"], None]


# ------------------------------------------------------------------------------------------------ face boxes


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The S3FD-style box (x0, y0, x1, y1, float32) of 478 MediaPipe landmarks (pixels): x from the face oval,
    y from the top of the eyebrows to the chin. Works on (..., 478, 2+) arrays."""
    points = np.asarray(landmarks, np.float32)[..., :2]
    oval = points[..., FACE_OVAL, :]
    brows = points[..., BROW_TOP, :]
    return np.stack(
        [oval[..., 0].min(-1), brows[..., 1].min(-1), oval[..., 0].max(-1), oval[..., 1].max(-1)], axis=-1
    ).astype(np.float32)


def pad_box(box: np.ndarray, frame_shape: tuple[int, ...], pads: tuple[int, int, int, int] = PADS) -> np.ndarray:
    """``box`` grown by ``pads`` = (top, bottom, left, right) and clipped to the frame, as the reference does."""
    top, bottom, left, right = pads
    height, width = frame_shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([max(0.0, x0 - left), max(0.0, y0 - top), min(float(width), x1 + right),
                     min(float(height), y1 + bottom)], np.float32)


def _raw_box(item: RenderItem) -> np.ndarray | None:
    if not item.face.found:
        return None
    return pad_box(face_box(item.face.landmarks), item.frame.shape)


def boxed_items(items: Iterable[RenderItem], window: int = SMOOTH_WINDOW) -> Iterator[tuple[RenderItem, Box | None]]:
    """Each item with its smoothed integer Wav2Lip box (None: no usable face), streamed (``boxes.boxed_items``)."""
    return smoothed_boxes(items, _raw_box, window)


# ------------------------------------------------------------------------------------------- network input


def crop_face(frame: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels resized to 96×96 BGR uint8 (bilinear, cv2's default, as the reference)."""
    x0, y0, x1, y1 = box
    return cv2.resize(frame[y0:y1, x0:x1], (IMG_SIZE, IMG_SIZE))


def face_input(crops: np.ndarray) -> np.ndarray:
    """(B, 96, 96, 3) uint8 crops → (B, 6, 96, 96) float32: the copy with rows 48..95 zeroed, then the crop, / 255."""
    crops = np.asarray(crops)
    masked = crops.copy()
    masked[:, IMG_SIZE // 2 :] = 0
    stacked = np.concatenate([masked, crops], axis=3).astype(np.float32) / 255.0
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def mel_input(mel: np.ndarray, indices: list[int] | np.ndarray, fps: float) -> np.ndarray:
    """(B, 1, 80, 16) float32 mel windows of the output frames ``indices`` (clamped at the end of the audio)."""
    return np.ascontiguousarray(mel_chunk_batch(mel, indices, fps)[:, None], dtype=np.float32)


# -------------------------------------------------------------------------------------------- compositing


@cache
def lower_face_mask(size: int = IMG_SIZE) -> np.ndarray:
    """(size, size) float32 blend weights in [0, 1]: 1 over mouth and jaw, easing (smoothstep) to exactly 0 well
    inside the box's border, so the box edge never shows. Read-only: it is shared."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    dx = (grid[None, :] - MASK_CENTRE[0]) / MASK_AXES[0]
    dy = (grid[:, None] - MASK_CENTRE[1]) / MASK_AXES[1]
    ramp = np.clip((np.sqrt(dx * dx + dy * dy) - MASK_INNER) / (1.0 - MASK_INNER), 0.0, 1.0)
    mask = (1.0 - ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
    mask.flags.writeable = False
    return mask


def composite(frame: np.ndarray, box: Box, generated: np.ndarray, *, color_match: bool = True) -> np.ndarray:
    """A copy of ``frame`` with the 96×96 BGR ``generated`` face resized into ``box`` through the feathered mask.

    With ``color_match`` the generated face is first shifted by the mean colour difference in the feather band
    (where both images are skin and a cast would show as a seam), limited to ``MAX_COLOR_SHIFT``.
    """
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    alpha = cv2.resize(lower_face_mask(), (width, height), interpolation=cv2.INTER_LINEAR)
    patch = cv2.resize(generated, (width, height)).astype(np.float32)
    region = frame[y0:y1, x0:x1].astype(np.float32)
    if color_match:
        band = alpha * (1.0 - alpha)
        total = float(band.sum())
        if total > 1e-3:
            shift = ((region - patch) * band[..., None]).sum(axis=(0, 1)) / total
            patch += np.clip(shift, -MAX_COLOR_SHIFT, MAX_COLOR_SHIFT).astype(np.float32)
    out = frame.copy()
    # region + 0 + 0.5 truncates back to region: where the mask is 0 the pixels stay exactly as they were.
    out[y0:y1, x0:x1] = np.clip(region + alpha[..., None] * (patch - region) + 0.5, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------- streaming


@dataclass
class _Batch:
    # Items with their boxes, popped as their outputs are yielded, so a batch's frames are released one by one.
    entries: deque[tuple[RenderItem, Box | None]]
    faces: torch.Tensor | None  # (n, 6, 96, 96) for the items that have a box, in order
    mels: torch.Tensor | None  # (n, 1, 80, 16)


class _Prefetch(Generic[_T]):
    """Run an iterator in a worker thread, at most ``depth`` values ahead of the consumer.

    The worker takes a slot before it starts on the next value and the consumer frees it when it takes a value,
    so with depth 1 exactly one batch is being prepared while the consumer works on the previous ones.
    """

    def __init__(self, source: Iterator[_T], depth: int = 1) -> None:
        self._values: queue.Queue[_Message[_T]] = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="wav2lip-prepare", daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[_T]) -> None:
        try:
            while True:
                while not self._slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    value = next(source)
                except StopIteration:
                    self._values.put(("end", None))
                    return
                self._values.put(("value", value))
                del value  # the consumer owns it; kept here it would hold a batch of frames until the next one
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            self._values.put(("error", exc))

    def __iter__(self) -> Iterator[_T]:
        while True:
            message = self._values.get()
            if message[0] == "end":
                return
            if message[0] == "error":
                raise message[1]
            self._slots.release()
            yield message[1]

    def close(self) -> None:
        """Stop the worker (after the value it is on) and wait for it, so no thread outlives the render."""
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------- engine


class Wav2LipEngine(LipSyncEngine):
    """Lip sync with the Wav2Lip generator, from a checkpoint the user supplies (never downloaded).

    ``checkpoint`` falls back to env ``HEYGEM_WAV2LIP_CHECKPOINT``; a missing or empty file raises
    ``CheckpointError`` here, before any work. ``device`` defaults to CUDA when available. ``overlap`` (default:
    on for CUDA) pipelines preparation, inference and compositing across batches.
    """

    name = "wav2lip"
    wants_gpu = True

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, device: str | None = None,
                 batch_size: int = DEFAULT_WAV2LIP_BATCH, *, overlap: bool | None = None,
                 color_match: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.checkpoint: Path = resolve_checkpoint(checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise HeygemError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device 'cpu'")
        self.batch_size = batch_size
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self.color_match = color_match
        self._model: torch.nn.Module | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Wav2LipEngine(checkpoint={str(self.checkpoint)!r}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size})")

    def load(self) -> None:
        """Read and check the checkpoint once (``CheckpointError`` if it is not Wav2Lip's generator)."""
        with self._lock:
            if self._model is None:
                self._model = load_wav2lip_checkpoint(self.checkpoint, self.device)

    def render(self, items: Iterable[RenderItem], script: ScriptFeatures, fps: float) -> Iterator[np.ndarray]:
        self.load()
        batches = self._batches(iter(items), script.mel, fps)
        if not self.overlap:
            for batch in batches:
                yield from self._composite(batch, self._infer(batch))
            return
        prefetch = _Prefetch(batches, depth=1)
        try:
            # Software pipeline: batch k is queued on the GPU (asynchronously) before batch k-1 is composited and
            # yielded, so the GPU computes while the CPU composites and the encoder encodes.
            previous: tuple[_Batch, object] | None = None
            for batch in prefetch:
                launched = self._infer(batch)
                if previous is not None:
                    yield from self._composite(*previous)
                previous = (batch, launched)
            if previous is not None:
                yield from self._composite(*previous)
        finally:
            prefetch.close()

    # -- stages

    def _batches(self, items: Iterator[RenderItem], mel: np.ndarray, fps: float) -> Iterator[_Batch]:
        boxed = boxed_items(items)
        while True:
            chunk = list(itertools.islice(boxed, self.batch_size))
            if not chunk:
                return
            batch = self._prepare(chunk, mel, fps)
            del chunk
            yield batch
            # The consumer owns the batch now; a reference kept here would hold all its frames while the next
            # batch fills, doubling the memory.
            del batch

    def _prepare(self, chunk: list[tuple[RenderItem, Box | None]], mel: np.ndarray, fps: float) -> _Batch:
        with_face = [(item, box) for item, box in chunk if box is not None]
        faces = mels = None
        if with_face:
            crops = np.stack([crop_face(item.frame, box) for item, box in with_face])
            faces = torch.from_numpy(face_input(crops))
            mels = torch.from_numpy(mel_input(mel, [item.index for item, _ in with_face], fps))
            if self.device.type == "cuda":  # page-locked memory lets the copy to the GPU run asynchronously
                faces, mels = faces.pin_memory(), mels.pin_memory()
        return _Batch(deque(chunk), faces, mels)

    def _infer(self, batch: _Batch) -> object:
        """Start the generator on the batch's faces; returns what ``_composite`` needs to collect the result.

        On CUDA nothing here waits for the GPU: uploads, kernels and the download into pinned memory are queued,
        and an event marks when the result is ready. On CPU the result is computed here.
        """
        if batch.faces is None or batch.mels is None:
            return None
        assert self._model is not None
        cuda = self.device.type == "cuda"
        chunk = len(batch.faces) if cuda else CPU_CHUNK
        with torch.inference_mode():
            faces = batch.faces.to(self.device, non_blocking=True)
            mels = batch.mels.to(self.device, non_blocking=True)
            outputs = [self._model(mels[s : s + chunk], faces[s : s + chunk]) for s in range(0, len(faces), chunk)]
            out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
            # × 255 → uint8 truncates like the reference's astype(np.uint8), and moves 4× fewer bytes back.
            pixels = (out * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            if not cuda:
                return pixels
            host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(pixels, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))  # the engine's GPU, not necessarily the current
            return host, ready

    def _composite(self, batch: _Batch, launched: object) -> Iterator[np.ndarray]:
        generated: np.ndarray | None = None
        if isinstance(launched, tuple):
            host, ready = launched
            ready.synchronize()
            generated = host.numpy()
        elif isinstance(launched, torch.Tensor):
            generated = launched.numpy()
        batch.faces = batch.mels = None  # inputs consumed (on CUDA the event above covers the upload too)
        row = 0
        while batch.entries:
            item, box = batch.entries.popleft()
            if box is None or generated is None:
                yield item.frame  # no usable face in this frame: it passes through untouched
                continue
            yield composite(item.frame, box, generated[row], color_match=self.color_match)
            row += 1
