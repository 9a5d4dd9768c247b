"""Orchestration overhead: a 3 scripts × 3 avatars campaign through ``heygem run`` vs a plain loop over the engine.

Both start as fresh processes (alternating, best of ``repeats``: the machine may be shared) on the same inputs
(demo-sized: 1280×720 templates, 3–9 s voices) and do the same renders: prepare 3 scripts, prepare and face-track
3 avatars, render 9 pairs. ``heygem run`` additionally runs everything through Dagster on a fresh instance,
measures A/V sync of every video, and writes manifests and a zip.
Target: factory wall time ≤ 1.25 × the loop's, with Mel computed 3 times and face tracks 3 times (event log).

    .venv/bin/python -m benchmarks.bench_factory [--keep DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heygem_pipeline.audio import synthesize_speech
from heygem_pipeline.demo import DemoSize, build_demo_bucket
from heygem_pipeline.demo_media import write_template_video

TARGET_RATIO = 1.25
REPO = Path(__file__).resolve().parents[1]

# The plain loop: the engine's stage functions, one after another, in one process.
LOOP = """
import sys, time
from pathlib import Path
from heygem_pipeline import pipeline
from heygem_pipeline.engines.registry import create_engine
bucket, work = Path(sys.argv[1]), Path(sys.argv[2])
engine = create_engine("viseme")
scripts = sorted((bucket / "scripts").iterdir())
avatars = sorted((bucket / "avatars").iterdir())
for script in scripts:
    pipeline.prepare_script(script, work / "s" / script.stem)
for avatar in avatars:
    pipeline.prepare_avatar(avatar, work / "a" / avatar.stem)
    pipeline.track_avatar(work / "a" / avatar.stem)
for script in scripts:
    for avatar in avatars:
        pipeline.render_pair(work / "s" / script.stem, work / "a" / avatar.stem,
                             work / "out" / f"{script.stem}__{avatar.stem}.mp4", engine)
"""


def build_bucket(root: Path) -> Path:
    build_demo_bucket(root, size=DemoSize())  # welcome.wav, pauses.wav, presenter.mp4, portrait.png
    synthesize_speech("A third script, to make three of each.", root / "scripts" / "third.wav")
    write_template_video(root / "avatars" / "studio.mp4", 4.0)
    return root


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _heygem_command(bucket: Path) -> list[str]:
    heygem = Path(sys.executable).with_name("heygem")
    if heygem.exists():
        return [str(heygem), "run", "--bucket", str(bucket)]
    return [sys.executable, "-m", "heygem_pipeline.factory", str(bucket)]


def _stage_counts(home: Path) -> dict[str, int]:
    code = ("import json; from dagster import AssetKey, AssetRecordsFilter, DagsterInstance; i = DagsterInstance.get();"
            "print(json.dumps({k: len(i.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(k)), limit=999)"
            ".records) for k in ('script_features', 'face_track', 'lipsync_video')}))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(keep: Path | None = None, repeats: int = 3) -> dict[str, object]:
    """Time both ways, alternating, ``repeats`` times each (the best of each counts: the machine may be shared);
    returns the figures (seconds, ratio, stage counts, verdict)."""
    root = Path(tempfile.mkdtemp(prefix="bench-factory-")) if keep is None else keep
    try:
        inputs = build_bucket(root / "inputs")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        loop_times, factory_times, counts = [], [], {}
        for attempt in range(repeats):
            loop_bucket, factory_bucket = root / f"loop{attempt}", root / f"factory{attempt}"
            for copy in (loop_bucket, factory_bucket):
                shutil.copytree(inputs, copy, dirs_exist_ok=True)
            loop_times.append(_timed([sys.executable, "-c", LOOP, str(loop_bucket), str(root / f"work{attempt}")],
                                     env))
            home = root / f"dagster_home{attempt}"  # a fresh instance each time: nothing is already done
            factory_env = {**env, "DAGSTER_HOME": str(home)}
            subprocess.run([sys.executable, "-m", "heygem_pipeline.instance", "init"], env=factory_env, cwd=REPO,
                           check=True)
            factory_times.append(_timed(_heygem_command(factory_bucket), factory_env))
            counts = _stage_counts(home)
        loop_s, factory_s = min(loop_times), min(factory_times)
        ratio = factory_s / loop_s
        return {
            "pairs": 9,
            "loop_s": round(loop_s, 1),
            "heygem_run_s": round(factory_s, 1),
            "all_loop_s": [round(t, 1) for t in loop_times],
            "all_heygem_run_s": [round(t, 1) for t in factory_times],
            "ratio": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "within_target": ratio <= TARGET_RATIO,
            "mel_computed": counts["script_features"],
            "face_tracks_computed": counts["face_track"],
            "videos_rendered": counts["lipsync_video"],
            "counts_ok": counts["script_features"] == 3 and counts["face_track"] == 3,
        }
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each kind; the best counts (default 3)")
    args = parser.parse_args(argv)
    figures = run(args.keep, args.repeats)
    print(json.dumps(figures, indent=2))
    return 0 if figures["within_target"] and figures["counts_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
