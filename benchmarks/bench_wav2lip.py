"""End-to-end speed of the Wav2Lip engine: decode template → face boxes → generator → composite → encode + mux.

Everything is made offline: the demo presenter template (``demo_media``), an espeak-ng voice trimmed to exactly
``seconds``, and a checkpoint with seeded random weights in the official layout (speed does not depend on the
weights' values). Preparation (template, voice, face track, checkpoint) is not timed. The render runs in a fresh
child process, so its peak RSS is the render's own, not the face tracker's or the checkpoint writer's
(``benchmarks.common``: ``prepare_render_inputs``, ``render_in_child``, shared with ``bench_musetalk``).

    .venv/bin/python -m benchmarks.bench_wav2lip [--seconds 30] [--width 1280 --height 720] [--device cuda]
        [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RENDER_FPS, prepare_render_inputs, render_in_child
from heygem_pipeline.engine.audio.features import frame_count


def random_checkpoint(dest: Path) -> Path:
    """A Wav2Lip checkpoint with seeded random weights, in the official layout."""
    import torch

    from heygem_pipeline.engine.lipsync.wav2lip import Wav2Lip, save_wav2lip_checkpoint

    torch.manual_seed(0)
    return save_wav2lip_checkpoint(Wav2Lip(), dest)


def run(seconds: float = 30.0, width: int = 1280, height: int = 720, *, device: str | None = None,
        batch_size: int = 128) -> dict:
    """Render ``seconds`` of voice onto a ``width``×``height`` template; returns speed and memory figures.

    ``fps`` is output frames per second of render wall time (decode, preprocessing, inference, compositing,
    encoding and muxing, engine load excluded); ``wall_s`` also includes loading the checkpoint.
    """
    with tempfile.TemporaryDirectory(prefix="bench_wav2lip_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        prepared = prepare_render_inputs(root, seconds, width, height)
        checkpoint = random_checkpoint(root / "wav2lip.pth")
        prep_s = time.perf_counter() - started
        stage = render_in_child(root, "wav2lip", {"checkpoint": str(checkpoint), "device": device,
                                                  "batch_size": batch_size})

    return {
        "seconds": seconds,
        "width": width,
        "height": height,
        "batch_size": batch_size,
        **stage,
        "expected_frames": frame_count(seconds, RENDER_FPS),
        "fps": round(stage["fps"], 2),
        "wall_s": round(stage["load_s"] + stage["render_s"], 3),
        "voice": prepared["voice"],
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
