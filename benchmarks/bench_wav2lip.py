"""End-to-end speed of the Wav2Lip engine: decode template → face boxes → generator → composite → encode + mux.

Everything is made offline: the demo presenter template (``demo_media``), an espeak-ng voice trimmed to exactly
``seconds``, and a checkpoint with seeded random weights in the official layout (speed does not depend on the
weights' values). Preparation (template, voice, face track, checkpoint) is not timed. The render runs in a fresh
child process, so its peak RSS is the render's own, not the face tracker's or the checkpoint writer's.

    .venv/bin/python -m benchmarks.bench_wav2lip [--seconds 30] [--width 1280 --height 720] [--device cuda]
        [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import peak_rss_kib
from heygem_pipeline.demo_media import write_template_video
from heygem_pipeline.engine.audio.features import frame_count
from heygem_pipeline.engine.audio.intake import synthesize_speech
from heygem_pipeline.engine.stages import prepare_avatar, prepare_script, track_avatar

FPS = 25
TEXT = (
    "Welcome to this short update from the product team. Today we will look at what changed this quarter, "
    "why it matters for you, and what comes next. Our customers asked for faster delivery and clearer reports, "
    "so we rebuilt the pipeline from the ground up. Every video is now rendered in minutes instead of hours, "
    "and every report shows exactly where the time went. Thank you for watching, and see you next time."
)


class _ChildMemory:
    """Sampled peak of the summed RSS of this process's live descendants (the ffmpeg decoders and encoder).

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` cannot measure them: Linux records the parent's RSS at the moment a
    child is forked and exec'd into the child's figure, so it reports the Python process's size, not ffmpeg's.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ChildMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        found, todo = [], [pid]
        while todo:
            parent = todo.pop()
            try:
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
        return found

    @staticmethod
    def _rss_kib(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            total = sum(self._rss_kib(pid) for pid in self._descendants(os.getpid()))
            self.peak_kib = max(self.peak_kib, total)


def _peak_rss_mb(children_kib: int) -> dict[str, float]:
    """Peak resident memory in MiB: this process (its own high-water mark) plus its children at their peak."""
    own = peak_rss_kib() / 1024
    return {
        "peak_rss_mb": round(own + children_kib / 1024, 1),
        "peak_rss_self_mb": round(own, 1),
        "peak_rss_children_mb": round(children_kib / 1024, 1),
        # As getrusage reports it, for comparison: inflated by the fork accounting described in _ChildMemory.
        "ru_maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def _voice(dest: Path, seconds: float, workdir: Path) -> Path:
    """An espeak-ng voice of exactly ``seconds``: the text spoken, repeated as needed, cut to length."""
    spoken = synthesize_speech(TEXT, workdir / "spoken.wav")
    samples, rate = sf.read(spoken, dtype="float32")
    total = round(seconds * rate)
    sf.write(dest, np.resize(samples, total), rate)  # np.resize repeats the array to the requested length
    return dest


def _render_stage(script_dir: str, avatar_dir: str, dest: str, checkpoint: str, device: str | None,
                  batch_size: int) -> dict:
    """The timed part, run in a fresh process: engine creation and load, then the whole render."""
    from heygem_pipeline.engine.lipsync.registry import create_engine
    from heygem_pipeline.engine.stages import render_pair

    started = time.perf_counter()
    engine = create_engine("wav2lip", checkpoint=checkpoint, device=device, batch_size=batch_size)
    engine.load()
    loaded = time.perf_counter()
    with _ChildMemory() as children:
        result = render_pair(script_dir, avatar_dir, dest, engine)
    finished = time.perf_counter()
    return {
        "device": str(engine.device),  # type: ignore[attr-defined]
        "frames": result.frames,
        "load_s": round(loaded - started, 3),
        "render_s": round(finished - loaded, 3),
        **_peak_rss_mb(children.peak_kib),
    }


def run(seconds: float = 30.0, width: int = 1280, height: int = 720, *, device: str | None = None,
        batch_size: int = 128) -> dict:
    """Render ``seconds`` of voice onto a ``width``×``height`` template; returns speed and memory figures.

    ``fps`` is output frames per second of render wall time (decode, preprocessing, inference, compositing,
    encoding and muxing, engine load excluded); ``wall_s`` also includes loading the checkpoint.
    """
    import torch

    from heygem_pipeline.engine.lipsync.wav2lip import Wav2Lip, save_wav2lip_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench_wav2lip_") as tmp:
        root = Path(tmp)
        prep_started = time.perf_counter()
        template = write_template_video(root / "template.mp4", seconds, width=width, height=height, fps=FPS)
        voice = _voice(root / "voice.wav", seconds, root)
        prepare_script(voice, root / "script")
        prepare_avatar(template, root / "avatar", fps=FPS)
        track_avatar(root / "avatar")
        torch.manual_seed(0)
        checkpoint = save_wav2lip_checkpoint(Wav2Lip(), root / "wav2lip.pth")
        prep_s = time.perf_counter() - prep_started

        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            stage = pool.submit(_render_stage, str(root / "script"), str(root / "avatar"), str(root / "out.mp4"),
                                str(checkpoint), device, batch_size).result()

    frames = stage["frames"]
    return {
        "seconds": seconds,
        "width": width,
        "height": height,
        "batch_size": batch_size,
        **stage,
        "expected_frames": frame_count(seconds, FPS),
        "fps": round(frames / stage["render_s"], 2) if stage["render_s"] > 0 else math.inf,
        "wall_s": round(stage["load_s"] + stage["render_s"], 3),
        "prepare_s": round(prep_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    result = run(args.seconds, args.width, args.height, device=args.device, batch_size=args.batch_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
