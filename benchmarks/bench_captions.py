"""Caption timing against espeak-ng's own word timing (``python -m benchmarks.bench_captions``).

English paragraphs are voiced by espeak-ng exactly as ``.txt`` scripts are, captioned by the engine (PocketSphinx
forced alignment, then cues), and every cue's start and every word's start is compared with the start espeak-ng
reports for that word while synthesizing it (``espeak_events``). Goal: English cues start within 150 ms of their
words. The paragraphs joined into one long script (twice over, 2 minutes) exercise alignment in sentence groups.
A Mandarin paragraph (voice ``cmn``) is timed sentence by sentence to the voiced segments; its cue starts are
reported against espeak-ng's word events too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from heygem_pipeline.engine.audio.intake import decode_audio, synthesize_speech
from heygem_pipeline.engine.captions.cues import caption_speech
from heygem_pipeline.engine.captions.espeak_events import start_errors

ENGLISH = [
    "Welcome to the quarterly update. This quarter we shipped the new onboarding flow, doubled the number of "
    "languages we support, and cut the time to publish a training video from days to minutes. Every presenter can "
    "now speak every script. Thank you for watching, and see you next time.",
    "Before you start, check three things. First, is the power cable plugged in? Second, is the green light on? "
    "Third, did you install version 2.4 of the HeyGem app from the company portal? If all three are fine, press "
    "the large button on the right and wait about thirty seconds.",
    "Our customer in Rotterdam, Mrs. van der Berg, told us something surprising: she reads every subtitle, even when "
    "the sound is on. Forty percent of viewers watch videos without sound, so captions are not an extra; they are "
    "the message itself.",
    "Safety first! Wear gloves when you handle the cartridges, keep them away from children, and store them below "
    "twenty-five degrees. Questions? Call our help desk at 555 0100, Monday to Friday, between nine and five.",
]
MANDARIN = ("大家好，欢迎来到我们的季度更新。这个季度，我们发布了新的入职流程，支持的语言数量翻了一番，"
            "并且把发布一个培训视频所需的时间从几天缩短到了几分钟。现在每位主持人都可以朗读每一份脚本。"
            "谢谢观看，我们下次再见！")


def _stats(errors_s: list[float]) -> dict[str, float]:
    ms = np.abs(np.array(errors_s)) * 1000
    return {"median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "worst_ms": round(float(ms.max()), 1), "n": int(ms.size)}


def measure(text: str, voice: str, folder: Path) -> dict[str, object]:
    wav = synthesize_speech(text, folder / "voice.wav", voice=voice)
    samples = decode_audio(wav)
    started = time.perf_counter()
    track = caption_speech(text, samples, "zh" if voice == "cmn" else "en")
    seconds = time.perf_counter() - started
    cue_errors = [e for e in start_errors(text, [(c.text, c.start) for c in track.cues], voice) if e is not None]
    word_errors = [e for e in start_errors(text, [(w.text, w.start) for w in track.words], voice) if e is not None]
    return {"method": track.method, "audio_s": round(len(samples) / 16000, 2), "align_s": round(seconds, 2),
            "cues": len(track.cues), "cue_errors": cue_errors, "word_errors": word_errors}


def run(paragraphs: int = len(ENGLISH)) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        english = [measure(text, "en-us", Path(tmp)) for text in ENGLISH[:paragraphs]]
        # All paragraphs as one script, twice over (over 2 minutes): aligned in sentence groups of ~30 s.
        long = measure(" ".join(ENGLISH[:paragraphs] * 2), "en-us", Path(tmp))
        mandarin = measure(MANDARIN, "cmn", Path(tmp))
    cue_errors = [e for m in english for e in m["cue_errors"]]  # type: ignore[attr-defined]
    word_errors = [e for m in english for e in m["word_errors"]]  # type: ignore[attr-defined]
    audio = sum(float(m["audio_s"]) for m in english)  # type: ignore[arg-type]
    align = sum(float(m["align_s"]) for m in english)  # type: ignore[arg-type]
    return {
        "english_methods": sorted({str(m["method"]) for m in english}),
        "english_cue_start_error": _stats(cue_errors),
        "english_word_start_error": _stats(word_errors),
        "english_goal": "every cue within 150 ms",
        "english_cues_within_150ms": f"{sum(abs(e) <= 0.150 for e in cue_errors)}/{len(cue_errors)}",
        "english_alignment_speed": f"{audio:.1f} s of speech in {align:.2f} s ({audio / align:.0f}x real time)",
        "english_long_script": {"audio_s": long["audio_s"], "align_s": long["align_s"], "method": long["method"],
                                "cue_start_error": _stats(long["cue_errors"]),  # type: ignore[arg-type]
                                "word_start_error": _stats(long["word_errors"])},  # type: ignore[arg-type]
        "mandarin_method": mandarin["method"],
        "mandarin_cue_start_error": _stats(mandarin["cue_errors"]),  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=len(ENGLISH))
    print(json.dumps(run(parser.parse_args().paragraphs), indent=2))


if __name__ == "__main__":
    main()
