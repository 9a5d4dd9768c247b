"""Memory of avatar intake (issue: media intake): normalizing and tracking a long 1080p template must not hold it.

Peak RSS of a fresh process that normalizes + face-tracks a 30 s and a 5-minute 1080p/25 template, side by side
(goal: flat in length; the 5-minute template is 7,500 frames, 46 GB as raw BGR).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ffmpeg

from benchmarks.common import CACHE, child_peak_rss_mb, template, timed
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg

_INTAKE_CODE = """
from pathlib import Path
from heygem_pipeline.engine import stages as pipeline
pipeline.prepare_avatar(Path({upload!r}), Path({work!r}))
track = pipeline.track_avatar(Path({work!r}))
result = len(track)
"""


def _long_template(seconds: float) -> Path:
    """A long 1080p template: the 30 s generated one looped (stream copy, seconds to make)."""
    dest = CACHE / f"template_1920x1080_{seconds:g}s_looped.mp4"
    if not dest.exists():
        base = template(30.0, 1920, 1080)
        run_ffmpeg(ffmpeg.input(ff_path(base), stream_loop=-1).output(ff_path(dest), t=seconds, c="copy")
                   .overwrite_output(), "looping the benchmark template")
    return dest


def run(long_seconds: float = 300.0) -> dict:
    short = template(30.0, 1920, 1080)
    long = _long_template(long_seconds)
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="heygem-bench-") as tmp:
        for name, upload in (("30s", short), (f"{long_seconds:g}s", long)):
            seconds, (rss, data) = timed(lambda upload=upload, name=name: child_peak_rss_mb(
                _INTAKE_CODE.format(upload=str(upload), work=str(Path(tmp) / name))))
            figures[f"frames_{name}"] = data["result"]
            figures[f"wall_s_{name}"] = round(seconds, 1)
            figures[f"peak_rss_mb_{name}"] = round(rss, 1)
    figures["rss_ratio_long_vs_short"] = round(figures[f"peak_rss_mb_{long_seconds:g}s"]  # type: ignore[operator]
                                               / figures["peak_rss_mb_30s"], 2)
    figures["goal"] = "peak RSS flat in length (ratio close to 1; the face track itself grows by 5.7 kB a frame)"
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long-seconds", type=float, default=300.0)
    options = parser.parse_args()
    for key, value in run(options.long_seconds).items():
        print(f"{key:>28}: {value}")
