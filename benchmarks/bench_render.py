"""Render speed and memory of the viseme engine (issue: lip-sync renderer).

Ratios measured side by side in one run, on a 720p/25 template:
- render with a cached face track  vs  a bare ffmpeg decode + re-encode of the same frames at the same
  settings (goal: at most 1.5x);
- face tracking (with the mouth bank, collected from the same decoded frames) + render  vs  the same baseline
  (goal: at most 2.5x);
- peak RSS of a render process for a short and a 3x longer voice (goal: flat in length).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ffmpeg

from benchmarks.common import child_peak_rss_mb, template, timed, voice
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg


def _baseline(template_mp4: Path, audio: Path, frames: int, dest: Path, settings: EncodeSettings) -> None:
    """What any renderer must at least do: decode the template frames, encode H.264 at the same settings, mux."""
    video = ffmpeg.input(ff_path(template_mp4), stream_loop=-1).video
    sound = ffmpeg.input(ff_path(audio)).audio
    run_ffmpeg(ffmpeg.output(video, sound, ff_path(dest), acodec="aac", audio_bitrate=settings.audio_bitrate,
                             **settings.video_options(), **{"frames:v": frames}).overwrite_output(), "baseline encode")


_RSS_CODE = """
from pathlib import Path
from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.lipsync.registry import create_engine
r = stages.render_pair(Path({script!r}), Path({avatar!r}), Path({dest!r}), create_engine("viseme"))
result = r.frames
"""


def run(seconds: float = 30.0, width: int = 1280, height: int = 720, repeats: int = 3) -> dict:
    settings = EncodeSettings()
    with tempfile.TemporaryDirectory(prefix="heygem-bench-") as tmp:
        work = Path(tmp)
        audio = voice(seconds)
        stages.prepare_script(audio, work / "script")
        stages.prepare_avatar(template(seconds, width, height), work / "avatar", settings=settings)
        # Tracking builds the avatar's mouth bank too; this first run also loads MediaPipe once, as a warm worker has.
        frames = len(stages.track_avatar(work / "avatar"))
        bank = stages.load_mouth_bank(work / "avatar", FaceTrack.load(work / "avatar" / folders.AVATAR_TRACK))

        # Interleaved, best of `repeats`: on a shared 2-core machine one-off timings swing by 30 %.
        engine = create_engine("viseme")
        base_runs, render_runs, track_runs = [], [], []
        for _ in range(repeats):
            track_runs.append(timed(lambda: stages.track_avatar(work / "avatar"))[0])
            base_runs.append(timed(lambda: _baseline(work / "avatar" / folders.AVATAR_TEMPLATE, work / "script" /
                                                     folders.SCRIPT_SOURCE, frames, work / "baseline.mp4",
                                                     settings))[0])
            elapsed, result = timed(lambda: stages.render_pair(work / "script", work / "avatar",
                                                                 work / "out.mp4", engine, settings=settings))
            render_runs.append(elapsed)
        base_s, render_s, track_s = min(base_runs), min(render_runs), min(track_runs)

        short_audio = voice(seconds / 3)
        stages.prepare_script(short_audio, work / "short")
        rss_short, _ = child_peak_rss_mb(_RSS_CODE.format(script=str(work / "short"), avatar=str(work / "avatar"),
                                                          dest=str(work / "short.mp4")))
        rss_long, _ = child_peak_rss_mb(_RSS_CODE.format(script=str(work / "script"), avatar=str(work / "avatar"),
                                                         dest=str(work / "long.mp4")))
    return {
        "clip": f"{seconds:g} s {width}x{height} @25 fps, {result.frames} frames",  # type: ignore[union-attr]
        "timing": f"best of {repeats}, baseline, tracking and render interleaved",
        "baseline_decode_encode_s": round(base_s, 2),
        "render_cached_track_s": round(render_s, 2),
        "tracking_with_mouth_bank_s": round(track_s, 2),
        "mouth_bank": f"{len(bank)} samples" + (" (donor)" if bank.donor else " (the template's own)"),
        "render_vs_baseline": round(render_s / base_s, 2),
        "render_plus_tracking_vs_baseline": round((render_s + track_s) / base_s, 2),
        "render_fps": round(result.frames / render_s, 1),  # type: ignore[union-attr]
        f"peak_rss_mb_{seconds / 3:g}s": round(rss_short, 1),
        f"peak_rss_mb_{seconds:g}s": round(rss_long, 1),
        "goals": "render_vs_baseline <= 1.5, render_plus_tracking_vs_baseline <= 2.5, peak RSS flat in length",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    options = parser.parse_args()
    for key, value in run(options.seconds, options.width, options.height).items():
        print(f"{key:>36}: {value}")
