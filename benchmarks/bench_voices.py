"""Speed and memory of the three voices (issue 20): espeak-ng, Piper (joe, medium) and Kokoro v1.0 int8.

One English marketing paragraph (~30 s of speech) is voiced by each engine, each voicing in a fresh Python (its own
peak RSS, VmHWM), the model loaded first and timed apart. Real-time factor: voicing wall seconds / audio seconds;
goals on 2 cores: Piper <= 0.3, Kokoro int8 <= 0.6 (reported, never asserted). Memory flat in script length: for
Piper and Kokoro, the peak RSS voicing the paragraph repeated to ~10 minutes over the peak voicing it once (goal
<= 1.15), and over the peak voicing ~2 minutes: whether the peak is still rising (it did, by 40-55 %, before the
sessions left out onnxruntime's memory patterns: ``voices.session``). onnxruntime uses its default threads
(one per core). The Kokoro speaker is ``jf_alpha`` (the registry's voice vectors are Japanese
speakers; the runner reads English with them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import child_peak_rss_mb, neural_voices
from heygem_pipeline.settings import DEFAULT_VOICE

PARAGRAPH = (
    "Meet the fastest way to turn your ideas into video. With HeyGem Studio, your team writes a script, picks a "
    "presenter, and gets a finished, lip-synced video in minutes, not weeks. No cameras, no studios, no reshoots. "
    "Update a price, translate a product launch, or personalize a welcome message for every new customer, all from "
    "one simple dashboard. Companies like yours already save hundreds of hours every quarter. Start your free trial "
    "today, and see what your message looks like when it finally speaks for itself."
)
KOKORO_SPEAKER = "jf_alpha"
RTF_GOALS = {"piper": 0.3, "kokoro": 0.6}
RSS_RATIO_GOAL = 1.15
MIDDLE_SECONDS = 120.0  # a second, ~2-minute script: is the peak still rising between it and the long one?

# The child: imports first (not timed), then the model load, then the voicing; figures as `result`.
_CHILD = """
import time
from pathlib import Path
import soundfile
{imports}
text = Path({text!r}).read_text(encoding="utf-8")
started = time.perf_counter()
{load}
load_s = time.perf_counter() - started
after_load_kb = peak_rss_kib()
started = time.perf_counter()
{voice}
voice_s = time.perf_counter() - started
result = {{"load_s": load_s, "voice_s": voice_s, "audio_s": soundfile.info({dest!r}).duration,
           "after_load_kb": after_load_kb}}
"""

_ENGINES = {
    "espeak": {
        "imports": "from heygem_pipeline.engine.audio.voices.espeak import synthesize_speech",
        "load": "pass  # a program: nothing to load",
        "voice": "synthesize_speech(text, {dest!r})",
    },
    "piper": {
        "imports": "from heygem_pipeline.engine.audio.voices import load_piper_voice, voice_with_piper",
        "load": "voice = load_piper_voice({model!r})",
        "voice": "voice_with_piper(text, {dest!r}, voice)",
    },
    "kokoro": {
        "imports": "from heygem_pipeline.engine.audio.voices import load_kokoro_voice, voice_with_kokoro",
        "load": "voice = load_kokoro_voice({model!r}, {voices!r})",
        "voice": f"voice_with_kokoro(text, {{dest!r}}, voice, speaker={KOKORO_SPEAKER!r}, language='en')",
    },
}


def voice_in_child(engine: str, text: str, folder: Path, name: str, **paths: str) -> dict[str, float]:
    """Voice ``text`` with ``engine`` in a fresh Python; its load and voicing seconds, audio seconds, peak RSS."""
    source = folder / f"{name}.txt"
    source.write_text(text, encoding="utf-8")
    dest = str(folder / f"{name}.wav")
    parts = {key: part.format(dest=dest, **paths) for key, part in _ENGINES[engine].items()}
    peak_mb, data = child_peak_rss_mb(_CHILD.format(text=str(source), dest=dest, **parts))
    result = data["result"]
    return {"load_s": round(result["load_s"], 2), "voice_s": round(result["voice_s"], 2),
            "audio_s": round(result["audio_s"], 1), "rtf": round(result["voice_s"] / result["audio_s"], 3),
            "peak_rss_after_load_mb": round(result["after_load_kb"] / 1024, 1), "peak_rss_mb": round(peak_mb, 1)}


def espeak_program_peak_mb(text: str, folder: Path) -> float | None:
    """The espeak-ng program's own peak RSS (MiB) voicing ``text``, read by ``/usr/bin/time`` (a small parent: a
    child of the big Python would report the Python's size, which Linux keeps across fork and exec); None without
    GNU time."""
    timer, espeak = shutil.which("time", path="/usr/bin:/bin"), shutil.which("espeak-ng")
    if timer is None or espeak is None:
        return None
    done = subprocess.run([timer, "-f", "%M", espeak, "-b", "1", "-v", DEFAULT_VOICE, "-w",
                           str((folder / "espeak_program.wav").resolve()), "--stdin"],
                          input=text.encode("utf-8"), capture_output=True, check=True)
    return round(int(done.stderr.decode().strip().splitlines()[-1]) / 1024, 1)


def run(long_seconds: float = 600.0) -> dict[str, object]:
    piper_model, (kokoro_model, kokoro_voices) = neural_voices()
    paths = {"piper": {"model": str(piper_model)},
             "kokoro": {"model": str(kokoro_model), "voices": str(kokoro_voices)}, "espeak": {}}
    figures: dict[str, object] = {"cores": os.cpu_count(), "text_words": len(PARAGRAPH.split()),
                                  "long_script_goal_s": long_seconds}
    with tempfile.TemporaryDirectory(prefix="heygem-bench-voices-") as tmp:
        folder = Path(tmp)
        for engine in ("espeak", "piper", "kokoro"):
            short = voice_in_child(engine, PARAGRAPH, folder, f"{engine}_short", **paths[engine])
            entry: dict[str, object] = {"paragraph": short}
            goal = RTF_GOALS.get(engine)
            if goal is not None:
                entry["rtf_goal"] = goal
                entry["rtf_meets_goal"] = short["rtf"] <= goal
                # The paragraph repeated to at least MIDDLE_SECONDS and long_seconds of this voice's speech.
                peaks: dict[float, float] = {}
                for seconds in (MIDDLE_SECONDS, long_seconds):
                    repeats = math.ceil(seconds / short["audio_s"])
                    voiced = voice_in_child(engine, " ".join([PARAGRAPH] * repeats), folder,
                                            f"{engine}_{seconds:g}s", **paths[engine])
                    entry[f"script_{seconds:g}s_x{repeats}"] = voiced
                    peaks[seconds] = voiced["peak_rss_mb"]
                ratio = round(peaks[long_seconds] / short["peak_rss_mb"], 3)
                entry["rss_ratio_long_vs_paragraph"] = ratio
                entry["rss_ratio_goal"] = RSS_RATIO_GOAL
                entry["rss_meets_goal"] = ratio <= RSS_RATIO_GOAL
                # Whether the peak is still rising after ~2 minutes (see the module docstring).
                entry[f"rss_ratio_long_vs_{MIDDLE_SECONDS:g}s"] = round(peaks[long_seconds] / peaks[MIDDLE_SECONDS], 3)
            else:
                entry["program_peak_rss_mb"] = espeak_program_peak_mb(PARAGRAPH, folder)
            figures[engine] = entry
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-seconds", type=float, default=600.0,
                        help="speech length of the long script (default 10 minutes)")
    print(json.dumps(run(parser.parse_args().long_seconds), indent=2))


if __name__ == "__main__":
    main()
