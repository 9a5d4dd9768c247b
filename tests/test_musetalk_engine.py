"""The musetalk engine from the command line and in the factory's options: `heygem render --engine musetalk
--models DIR` with the stand-in weights (their face parser marks no jaw, so the frames pass through unchanged, as
the reference's do with these weights), the face box rule, and one-line errors for missing weights."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from heygem_pipeline.demo_media import write_still
from heygem_pipeline.engine.lipsync.musetalk.engine import NOSE_BRIDGE, face_box
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.errors import ModelFileError
from heygem_pipeline.factory.campaigns import RenderOptions, parse_campaign
from tests.helpers import REPO
from tests.helpers.musetalk_fixture import standin_models

HEYGEM = REPO / ".venv" / "bin" / "heygem"


def test_face_box_follows_the_reference_rule() -> None:
    """x from the face's widest points, y2 its lowest point, y1 the chin mirrored about the nose bridge."""
    landmarks = np.zeros((478, 3))
    landmarks[:, 0], landmarks[:, 1] = 200.0, 150.0
    landmarks[234, 0], landmarks[454, 0], landmarks[152, 1] = 120.0, 290.0, 260.0
    landmarks[NOSE_BRIDGE, 1] = 170.0
    assert face_box(landmarks).tolist() == [120.0, 80.0, 290.0, 260.0]
    landmarks[NOSE_BRIDGE, 1] = 100.0  # the mirrored top would be above the frame: clipped at 0
    assert face_box(landmarks)[1] == 0.0


def test_a_campaign_chooses_musetalk_and_its_weights(tmp_path: Path) -> None:
    campaign = parse_campaign("engine: musetalk\nmodels: ~/weights/musetalk\n", "mt.yaml")
    options = campaign.render_options(RenderOptions())
    assert options.engine == "musetalk" and options.models == str(Path.home() / "weights" / "musetalk")
    assert options.as_config()["models"] == options.models and options.variant.startswith("musetalk-")


def test_a_musetalk_render_may_run_longer() -> None:
    """Run monitoring's limit of a render grows with the engine's slowness (MuseTalk on a CPU: ~0.2 fps)."""
    from assets.runs import item_tags
    from heygem_pipeline.factory.plan import ItemKey, Stage, WorkItem
    from heygem_pipeline.settings import ToolLimits

    limits = ToolLimits(stall_seconds=60, timeout_factor=10)

    def limit(engine: str) -> int:
        options = RenderOptions(engine=engine)
        item = WorkItem(ItemKey.pair(Stage.RENDER, options.variant, "hi", "anna"), "token", options)
        return int(item_tags(item, 2.0, limits)["dagster/max_runtime"])

    assert (limit("viseme"), limit("wav2lip"), limit("musetalk")) == (340, 340, 300 + 2 * 10 * 2 * 60)


def test_missing_weights_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEYGEM_MUSETALK_MODELS", raising=False)
    with pytest.raises(ModelFileError, match=r"needs MuseTalk 1\.5's weights"):
        create_engine("musetalk")
    with pytest.raises(ModelFileError) as caught:
        create_engine("musetalk", models=str(tmp_path))
    assert str(caught.value) == (f"{tmp_path}/musetalkV15/unet.pth: is missing; download MuseTalk 1.5's weights as "
                                 "its README lays them out (huggingface TMElyralab/MuseTalk)")


@pytest.mark.slow
def test_heygem_render_with_musetalk(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("Hello there.")
    write_still(tmp_path / "anna.png", width=320, height=240)
    out = tmp_path / "out.mp4"
    result = subprocess.run([str(HEYGEM), "render", "--audio", str(tmp_path / "hello.txt"), "--avatar",
                             str(tmp_path / "anna.png"), "-o", str(out), "--engine", "musetalk", "--models",
                             str(standin_models())], capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    info = probe(out)
    assert info.video is not None and info.audio is not None and (info.video.width, info.video.height) == (320, 240)
    frames = info.video.frame_count or round((info.video.duration or 0) * 25)
    audio_seconds = info.audio.duration or 0.0
    assert abs(frames / 25 - audio_seconds) <= 0.05  # the video lasts as long as the voice
    assert "engine musetalk" in result.stdout + result.stderr and "sync offset" in result.stdout + result.stderr
    assert out.with_suffix(".srt").read_text().strip() and out.with_suffix(".vtt").exists()


@pytest.mark.slow
def test_a_campaign_renders_with_musetalk_through_dagster(tmp_path: Path) -> None:
    from heygem_pipeline.client.run import run_factory
    from heygem_pipeline.instance.setup import prepare_home
    from tests.helpers import dagster_home_env

    bucket = tmp_path / "bucket"
    (bucket / "scripts").mkdir(parents=True)
    (bucket / "scripts" / "hi.txt").write_text("Hello there, welcome.")
    write_still(bucket / "avatars" / "anna.png", width=320, height=240)
    (bucket / "campaigns").mkdir()
    (bucket / "campaigns" / "mt.yaml").write_text(f"engine: musetalk\nmodels: {standin_models()}\n")
    with dagster_home_env(tmp_path / "home") as home:
        prepare_home(home)
        report = run_factory(str(bucket), progress=None)
    (pair,) = report.pairs
    # Delivered; the stand-in face parser marks no jaw, so the mouth does not move and the sync check may say so.
    assert pair.status in ("ok", "check_failed") and pair.output, pair
    manifest = (bucket / "outputs" / "mt" / "manifest.csv").read_text()
    assert ",musetalk," in manifest and (bucket / "outputs" / "mt" / "hi__anna.srt").exists()
    assert [p.name.split("-")[0] for p in (bucket / "work" / "renders").iterdir()] == ["musetalk"]
