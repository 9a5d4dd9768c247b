"""Campaign files' ``voice:`` and which voiced copy of each script a campaign renders (no media: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import CampaignError, MediaOptions, parse_campaign
from heygem_pipeline.factory.state import FactoryState
from heygem_pipeline.factory.uploads import scan_bucket
from heygem_pipeline.factory.voicing import VoicePlan, default_voice

PIPER = "{engine: piper, model: /voices/en_US-amy-medium.onnx}"


def test_voice_values() -> None:
    assert parse_campaign("voice: en-gb", "c.yaml").voice == VoicePlan.single(EspeakChoice(speaker="en-gb"))
    one = parse_campaign(f"voice: {PIPER}", "c.yaml").voice
    assert one is not None and one.voices["en"] == one.voices["zh"] == PiperChoice(
        model="/voices/en_US-amy-medium.onnx")
    by_language = parse_campaign("voice:\n  en: {engine: kokoro, model: ~/k.onnx, voices: ~/v.bin, speaker: af_heart}"
                                 "\n  zh: cmn\n", "c.yaml").voice
    assert by_language is not None
    home = Path.home()
    assert by_language.voices["en"] == KokoroChoice(model=str(home / "k.onnx"), voices=str(home / "v.bin"),
                                                    speaker="af_heart")
    assert by_language.voices["zh"] == EspeakChoice(speaker="cmn")
    assert parse_campaign("scripts: '*'", "c.yaml").voice is None


@pytest.mark.parametrize(("text", "message"), [
    ("voice: {engine: kokoro, model: a.onnx, speaker: af}", "c.yaml: voice.voices: is required for engine kokoro"),
    ("voice: {engine: bark}", "c.yaml: voice.engine: must be one of espeak, piper, kokoro"),
    ("voice: {fr: {engine: espeak}}", "c.yaml: voice: unknown language 'fr'; give one voice, or voices for en and zh"),
    ("voice: {engine: piper, model: a.onnx, sped: 2}",
     "c.yaml: voice: unknown key 'sped' for engine piper; allowed: engine, model, speaker, speed"),
    ("voice: {engine: piper, model: a.onnx, speed: 9}",
     "c.yaml: voice.speed: must be a number above 0.25 and at most 4"),
    ("voice: {zh: {engine: piper, speed: 1}}", "c.yaml: voice.zh.model: is required for engine piper"),
    ("voice: 3", "c.yaml: voice: must be an espeak-ng voice name, a voice ({engine: kokoro|piper|espeak, …}) or one "
                 "per language"),
])
def test_voice_errors_name_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(text, "c.yaml")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_default_voice_from_the_settings(tmp_path: Path) -> None:
    assert default_voice(voice="en-gb") == EspeakChoice(speaker="en-gb")
    assert default_voice(voice="af_heart", model="/m.onnx", vectors="/v.bin", speed=1.1) == KokoroChoice(
        model="/m.onnx", voices="/v.bin", speaker="af_heart", speed=1.1)
    assert default_voice(voice="en-us", model="/m.onnx") == PiperChoice(model="/m.onnx")  # the first speaker
    assert default_voice(voice="3", model="/m.onnx") == PiperChoice(model="/m.onnx", speaker=3)


@pytest.fixture
def bucket(memory_bucket: Bucket) -> Bucket:
    memory_bucket.write_bytes("scripts/news.txt", b"Good morning, the studio opens at nine.\n")
    memory_bucket.write_bytes("scripts/zh.txt", "早上好，演播室九点开门。\n".encode())
    memory_bucket.write_bytes("scripts/take.wav", b"RIFF....")
    memory_bucket.write_bytes("avatars/anna.mp4", b"....")
    memory_bucket.write_bytes("campaigns/plain.yaml", b"scripts: '*'\n")
    memory_bucket.write_bytes("campaigns/piper.yaml", f"voice: {{en: {PIPER}}}\n".encode())
    memory_bucket.write_bytes("campaigns/same.yaml", b"voice: {engine: espeak, speaker: en-us}\n")
    return memory_bucket


def test_each_campaign_renders_the_copy_its_voice_makes(bucket: Bucket) -> None:
    scan = scan_bucket(bucket)
    state = FactoryState(bucket, scan, MediaOptions())
    variant = PiperChoice(model="/voices/en_US-amy-medium.onnx").variant

    def pairs(campaign: str) -> list[str]:
        return sorted(p.script for p in state.campaign_pairs(scan.campaigns[campaign]))

    assert pairs("plain") == pairs("same") == ["news", "take", "zh"]  # the default voice: the scripts' own keys
    # Only the English text is voiced by the campaign's voice; the Mandarin one keeps the default (espeak-ng cmn),
    # and an audio script needs no voice.
    assert pairs("piper") == [f"news@{variant}", "take", "zh"]
    assert sorted(state.script_keys()) == ["news", f"news@{variant}", "take", "zh"]
    assert state.script_voice(f"news@{variant}") == PiperChoice(model="/voices/en_US-amy-medium.onnx")
    assert state.script_voice("zh") == EspeakChoice(speaker="cmn")
    assert state.script_voice("news") == EspeakChoice()
    assert state.script_token("zh").split("|")[2] == "voice=cmn"
    assert state.script_voice("news@piper-gone-x1-abcdef") is None  # no campaign voices it so any more
    assert "voice=unknown:piper-gone-x1-abcdef" in state.script_token("news@piper-gone-x1-abcdef")
    assert not state.script_ready("news@piper-gone-x1-abcdef")
    pair = next(p for p in state.campaign_pairs(scan.campaigns["piper"]) if p.script.startswith("news@"))
    assert pair.upload_script == "news"
