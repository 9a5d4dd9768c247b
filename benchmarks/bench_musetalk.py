"""End-to-end speed and memory of the MuseTalk 1.5 engine, side by side with Wav2Lip on the same inputs (issue 21).

The inputs are bench_wav2lip's (``benchmarks.common.prepare_render_inputs``): the demo presenter template at
``width``×``height``, an espeak-ng voice of ``seconds`` (a synthetic one where espeak-ng is missing), the avatar's
face track; Wav2Lip gets a seeded random checkpoint, MuseTalk the stand-in weights of the tests
(``tests.helpers.musetalk_fixture.standin_models``: the real networks' exact shapes, so the same arithmetic and
speed as MuseTalk 1.5's real weights; written once per machine, ~3.8 GB, 20-40 s) or ``--models DIR``.

Each render runs in a fresh child process (its own peak RSS) and is timed from the loaded engine to the muxed file:
decode → boxes → networks → paste → encode + mux (``fps``: output frames per second of that). For MuseTalk the
networks are also timed on their own (synchronised on a GPU): Whisper, VAE encode, UNet, VAE decode and the face
parser of the paste; ``networks_fps`` is frames per second of their sum. On CUDA the peak GPU memory
(``torch.cuda.max_memory_allocated``, load and render) is reported.

On the CPU MuseTalk is slow (a UNet batch of 8 takes 20-30 s on 2 cores), so the default clip is 2 s (50 frames;
fps does not depend on the length); the issue asks for 10 s: ``--seconds 10``. The GPU run is
``benchmarks/gpu_musetalk.sh`` (fp32 and fp16, 720p and 1080p, 10 s).

    .venv/bin/python -m benchmarks.bench_musetalk [--seconds 2] [--width 1280 --height 720] [--device cuda]
        [--fp16 | --precisions fp32,fp16] [--engines wav2lip,musetalk] [--models DIR] [--jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.bench_wav2lip import random_checkpoint
from benchmarks.common import RENDER_FPS, prepare_render_inputs, render_in_child
from heygem_pipeline.engine.audio.features import frame_count

ENGINES = ("wav2lip", "musetalk")
PRECISIONS = ("fp32", "fp16")
ISSUE_SECONDS = 10.0


def network_timers(engine: object) -> Callable[[], dict]:
    """Wrap the loaded MuseTalk model's network steps with timers (a CUDA sync before and after each, so the GPU's
    work is counted where it is queued); returns the function that reports their seconds."""
    import torch

    from heygem_pipeline.engine.lipsync.musetalk import blend

    model = engine.model  # type: ignore[attr-defined]
    cuda = model.device.type == "cuda"
    spent = {"whisper": 0.0, "vae_encode": 0.0, "unet": 0.0, "vae_decode": 0.0, "face_parser": 0.0}

    def timed(part: str, function: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            if cuda:
                torch.cuda.synchronize(model.device)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize(model.device)
            spent[part] += time.perf_counter() - started
            return result
        return wrapper

    model.whisper_features = timed("whisper", model.whisper_features)
    model.encode = timed("vae_encode", model.encode)
    model.denoise = timed("unet", model.denoise)
    model.decode = timed("vae_decode", model.decode)
    blend.parse_face = timed("face_parser", blend.parse_face)  # what paste → crop_labels calls
    return lambda: {"networks_s": round(sum(spent.values()), 3),
                    "network_s": {part: round(seconds, 3) for part, seconds in spent.items()}}


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def run(seconds: float = 2.0, width: int = 1280, height: int = 720, *, device: str | None = None,
        precisions: Sequence[str] = ("fp32",), engines: Sequence[str] = ENGINES, models: str | None = None,
        wav2lip_batch_size: int = 128, on_render: Callable[[dict], None] | None = None) -> dict:
    """Prepare the inputs once, then render them with each engine (MuseTalk once per precision), each in a fresh
    process; returns the figures, ``renders`` one entry per render (also given to ``on_render`` as it ends)."""
    device = _device(device)
    if unknown := [e for e in engines if e not in ENGINES] + [p for p in precisions if p not in PRECISIONS]:
        raise ValueError(f"unknown engine or precision {unknown}; engines: {ENGINES}, precisions: {PRECISIONS}")
    if "fp16" in precisions and "musetalk" in engines and not device.startswith("cuda"):
        raise ValueError("fp16 runs MuseTalk's networks in half precision on a GPU only; use --device cuda")
    if "musetalk" in engines and models is None:
        from tests.helpers.musetalk_fixture import standin_models

        models = str(standin_models())
    started = time.perf_counter()
    frames = frame_count(seconds, RENDER_FPS)
    figures: dict[str, object] = {
        "clip": f"{seconds:g} s ({frames} frames at {RENDER_FPS} fps)"
                + ("" if seconds == ISSUE_SECONDS else f"; the issue asks for {ISSUE_SECONDS:g} s (--seconds)"),
        "seconds": seconds, "width": width, "height": height, "device": device,
    }
    renders: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_musetalk_") as tmp:
        root = Path(tmp)
        figures.update(prepare_render_inputs(root, seconds, width, height))
        jobs: list[tuple[str, str, dict, Callable | None]] = []
        if "wav2lip" in engines:
            checkpoint = random_checkpoint(root / "wav2lip.pth")
            jobs.append(("wav2lip", "fp32", {"checkpoint": str(checkpoint), "device": device,
                                             "batch_size": wav2lip_batch_size}, None))
        if "musetalk" in engines:
            jobs += [("musetalk", p, {"models": models, "device": device, "fp16": p == "fp16"}, network_timers)
                     for p in precisions]
        for engine, precision, kwargs, instrument in jobs:
            stage = render_in_child(root, engine, kwargs, instrument)
            entry = {"engine": engine, "precision": precision, "seconds": seconds, "width": width,
                     "height": height, **stage}
            if "networks_s" in stage:
                entry["networks_fps"] = round(stage["frames"] / stage["networks_s"], 3)
            entry["expected_frames"] = frames
            renders.append(entry)
            if on_render is not None:
                on_render(entry)
    figures["renders"] = renders
    figures["run_s"] = round(time.perf_counter() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2; the issue asks for 10)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--fp16", action="store_true", help="MuseTalk in half precision (GPU only)")
    parser.add_argument("--precisions", default=None, help="MuseTalk's precisions, comma-separated: fp32,fp16")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: wav2lip,musetalk")
    parser.add_argument("--models", default=None, help="MuseTalk's weights folder (default: the stand-in weights)")
    parser.add_argument("--wav2lip-batch-size", type=int, default=128)
    parser.add_argument("--jsonl", action="store_true", help="one JSON line per render, as it ends")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",") if args.precisions else ["fp16" if args.fp16 else "fp32"]
    on_render = (lambda entry: print(json.dumps(entry), flush=True)) if args.jsonl else None
    figures = run(args.seconds, args.width, args.height, device=args.device, precisions=precisions,
                  engines=args.engines.split(","), models=args.models, wav2lip_batch_size=args.wav2lip_batch_size,
                  on_render=on_render)
    if not args.jsonl:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
