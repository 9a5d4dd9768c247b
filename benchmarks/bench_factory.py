"""Orchestration overhead: campaigns through ``heygem run`` (Dagster's queue, daemon and Celery workers) vs a plain
Python loop over the engine, measured side by side.

- (a) ``demo``: the 3 scripts × 3 avatars demo-sized campaign (1280×720 templates, 3–9 s voices), 9 pairs;
- (b) ``realistic``: 4 scripts of 20–40 s × 3 avatars at 720p (two clips and a photo), 12 pairs.

Both ways start as fresh processes (alternating, best of ``repeats``: the machine may be shared) on the same inputs
and do the same renders: prepare the scripts, prepare and face-track the avatars, render every pair. ``heygem run``
also starts its services, measures every video's A/V sync, duration and face coverage, and writes the manifests and
the zip, all through Dagster on a fresh instance. Target: (b) ``heygem run`` ≤ 1.25 × the loop, with each Mel and
face track computed once (event log). Each run's overhead from launch (RUN_STARTING, the daemon handing it to the
launcher) to its first step is reported too.

    .venv/bin/python -m benchmarks.bench_factory [--campaign demo|realistic] [--keep DIR] [--repeats N]
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

from benchmarks.common import template, voice
from heygem_pipeline.demo import DemoSize, build_demo_bucket
from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import synthesize_speech

TARGET_RATIO = 1.25
REPO = Path(__file__).resolve().parents[1]

# The plain loop: the engine's stage functions, one after another, in one process.
LOOP = """
import sys, time
from pathlib import Path
from heygem_pipeline.engine import stages as pipeline
from heygem_pipeline.engine.lipsync.registry import create_engine
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

# Figures read back from the instance: stage counts, and each run's launch-to-first-step time.
FIGURES = """
import json
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance
instance = DagsterInstance.get()
counts = {k: len(instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(k)), limit=9999).records)
          for k in ('script_features', 'face_track', 'lipsync_video')}
overheads = {}
for record in instance.get_run_records():
    events = instance.all_logs(record.dagster_run.run_id)
    starting = [e.timestamp for e in events if e.dagster_event_type == DagsterEventType.RUN_STARTING]
    step = [e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_START]
    if starting and step:
        overheads.setdefault(record.dagster_run.job_name, []).append(min(step) - starting[0])
print(json.dumps({"counts": counts, "overheads": overheads}))
"""


def build_demo(root: Path) -> Path:
    build_demo_bucket(root, size=DemoSize())  # welcome.wav, pauses.wav, presenter.mp4, portrait.png
    shutil.rmtree(root / "transcripts")  # the loop writes no captions: like for like
    synthesize_speech("A third script, to make three of each.", root / "scripts" / "third.wav")
    write_template_video(root / "avatars" / "studio.mp4", 4.0)
    return root


def build_realistic(root: Path) -> Path:
    """4 voices of 20, 27, 33 and 40 s; a 10 s and a 6 s 720p presenter clip and a 720p photo."""
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "avatars").mkdir(parents=True, exist_ok=True)
    for seconds in (20, 27, 33, 40):
        shutil.copyfile(voice(seconds), root / "scripts" / f"voice_{seconds}s.wav")
    shutil.copyfile(template(10, 1280, 720), root / "avatars" / "presenter.mp4")
    shutil.copyfile(template(6, 1280, 720), root / "avatars" / "studio.mp4")
    write_still(root / "avatars" / "portrait.png", width=1280, height=720)
    return root


CAMPAIGNS = {"demo": (build_demo, 3, 3), "realistic": (build_realistic, 4, 3)}  # builder, scripts, avatars


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _figures(home: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", FIGURES], env={**os.environ, "DAGSTER_HOME": str(home)},
                            capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"runs": len(ordered), "median_s": round(ordered[len(ordered) // 2], 2), "max_s": round(ordered[-1], 2)}


def measure(campaign: str, root: Path, repeats: int) -> dict[str, object]:
    builder, scripts, avatars = CAMPAIGNS[campaign]
    inputs = builder(root / "inputs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    loop_times, factory_times, figures = [], [], {}
    for attempt in range(repeats):
        loop_bucket, factory_bucket = root / f"loop{attempt}", root / f"factory{attempt}"
        for copy in (loop_bucket, factory_bucket):
            shutil.copytree(inputs, copy, dirs_exist_ok=True)
        loop_times.append(_timed([sys.executable, "-c", LOOP, str(loop_bucket), str(root / f"work{attempt}")], env))
        home = root / f"dagster_home{attempt}"  # a fresh instance each time: nothing is already done
        factory_env = {**env, "DAGSTER_HOME": str(home)}
        subprocess.run([sys.executable, "-m", "heygem_pipeline.instance", "init"], env=factory_env, cwd=REPO,
                       check=True)
        factory_times.append(_timed([sys.executable, "-m", "heygem_pipeline.cli", "run", "--bucket",
                                     str(factory_bucket)], factory_env))
        figures = _figures(home)
    loop_s, factory_s = min(loop_times), min(factory_times)
    counts = figures["counts"]
    return {
        "pairs": scripts * avatars,
        "loop_s": round(loop_s, 1),
        "heygem_run_s": round(factory_s, 1),
        "all_loop_s": [round(t, 1) for t in loop_times],
        "all_heygem_run_s": [round(t, 1) for t in factory_times],
        "ratio": round(factory_s / loop_s, 3),
        "target_ratio": TARGET_RATIO if campaign == "realistic" else None,
        "launch_to_first_step": {job: _summary(s) for job, s in sorted(figures["overheads"].items())},
        "mel_computed": counts["script_features"],
        "face_tracks_computed": counts["face_track"],
        "videos_rendered": counts["lipsync_video"],
        "counts_ok": (counts["script_features"], counts["face_track"], counts["lipsync_video"])
        == (scripts, avatars, scripts * avatars),
    }


def run(keep: Path | None = None, repeats: int = 3, campaigns: tuple[str, ...] = tuple(CAMPAIGNS)
        ) -> dict[str, object]:
    """Both campaigns' figures (seconds, ratio, launch overheads, stage counts)."""
    root = Path(tempfile.mkdtemp(prefix="bench-factory-")) if keep is None else keep
    try:
        return {name: measure(name, root / name, repeats) for name in campaigns}
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaign", choices=tuple(CAMPAIGNS), action="append", help="default: both")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each kind; the best counts (default 3)")
    args = parser.parse_args(argv)
    figures = run(args.keep, args.repeats, tuple(args.campaign or CAMPAIGNS))
    print(json.dumps(figures, indent=2))
    realistic = figures.get("realistic")
    ok = all(f["counts_ok"] for f in figures.values()) and (realistic is None or realistic["ratio"] <= TARGET_RATIO)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
