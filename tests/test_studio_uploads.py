"""The studio's rules for what it writes into the bucket, and its start-up safety checks (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from heygem_pipeline.engine.audio.voices.catalog import voice_catalog
from heygem_pipeline.errors import UnsupportedFormatError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.campaigns import parse_campaign
from heygem_pipeline.factory.uploads import scan_bucket
from heygem_pipeline.factory.voicing import VoicePlan
from heygem_pipeline.studio.i18n import TEXT, browser_language, t
from heygem_pipeline.studio.server import StudioConfigError, StudioSettings, read_auth
from heygem_pipeline.studio.uploads import (
    STUDIO_MARK,
    StudioOptions,
    bucket_files,
    safe_file_name,
    store_text,
    store_upload,
    write_campaign,
)
from tests.helpers.voice_models import kokoro_standin, kokoro_voices, piper_standin


@pytest.mark.parametrize(("name", "safe"), [
    ("welcome.wav", "welcome.wav"),
    ("../../etc/passwd.wav", "passwd.wav"),
    ("C:\\Users\\anna\\Anna Smith.MP4", "Anna Smith.mp4"),
    (".hidden.mp3", "hidden.mp3"),
    ("-rf.wav", "rf.wav"),
    ("主持人 李.png", "主持人 李.png"),
    ("a<b>|c;rm.mp4", "a_b_c_rm.mp4"),
    ("...", "upload"),
    ("x" * 300 + ".webm", "x" * 75 + ".webm"),
])
def test_safe_file_names_stay_in_their_folder(name: str, safe: str) -> None:
    assert safe_file_name(name) == safe


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_uploads_never_replace_silently(tmp_path: Path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    first = _file(tmp_path / "up1" / "voice.wav", b"RIFF first")
    assert store_upload(bucket, "script", first, "voice.wav").name == "voice.wav"
    # The same content again: reused, nothing to redo.
    again = store_upload(bucket, "script", _file(tmp_path / "up2" / "voice.wav", b"RIFF first"), "voice.wav")
    assert again.name == "voice.wav" and again.reused
    # Other content under a taken name: a new name; the file pairs use is untouched.
    other = store_upload(bucket, "script", _file(tmp_path / "up3" / "voice.wav", b"RIFF other"), "voice.wav")
    assert other.name == "voice-2.wav" and not other.reused
    assert (tmp_path / "bucket" / "scripts" / "voice.wav").read_bytes() == b"RIFF first"
    # An explicit replace writes over it.
    store_upload(bucket, "script", _file(tmp_path / "up4" / "voice.wav", b"RIFF new"), "voice.wav", replace=True)
    assert (tmp_path / "bucket" / "scripts" / "voice.wav").read_bytes() == b"RIFF new"
    # No temporary is left, and nothing was written outside scripts/.
    assert sorted(p.name for p in (tmp_path / "bucket").rglob("*")) == ["scripts", "voice-2.wav", "voice.wav"]


def test_an_upload_outside_the_formats_is_refused_in_one_line(tmp_path: Path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    with pytest.raises(UnsupportedFormatError) as caught:
        store_upload(bucket, "avatar", _file(tmp_path / "notes.txt", b"hello"), "notes.txt")
    assert str(caught.value).startswith("notes.txt: '.txt' is not a presenter format; upload one of ")
    with pytest.raises(UnsupportedFormatError):
        store_upload(bucket, "script", _file(tmp_path / "run.sh", b"#!/bin/sh"), "../run.sh")
    assert not (tmp_path / "bucket").exists() or not any((tmp_path / "bucket").rglob("*.*"))


def test_typed_text_is_one_script_per_text(tmp_path: Path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    first = store_text(bucket, "  Hello from the studio.  ")
    assert first.name.startswith("text-") and first.name.endswith(".txt") and not first.reused
    assert store_text(bucket, "Hello from the studio.") == type(first)(first.name, reused=True)
    assert (tmp_path / "bucket" / "scripts" / first.name).read_text() == "Hello from the studio.\n"
    assert bucket_files(bucket, "script") == [first.name]


def test_a_batch_is_a_campaign_of_exactly_its_files(tmp_path: Path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    for name in ("a.wav", "b [take 2].wav", "c.wav"):
        _file(tmp_path / "bucket" / "scripts" / name, b"x")
    for name in ("anna.png", "ben.png"):
        _file(tmp_path / "bucket" / "avatars" / name, b"x")
    name = write_campaign(bucket, "Spring launch", ["a.wav", "b [take 2].wav"], ["ben.png"],
                          StudioOptions(subtitles="burn", quality="standard"))
    assert name == "Spring launch.yaml"
    text = (tmp_path / "bucket" / "campaigns" / name).read_text()
    campaign = parse_campaign(text, name)
    assert campaign.crf == 23 and campaign.subtitles.burn and campaign.engine == "viseme"
    scan = scan_bucket(bucket)
    pairs = {(scan.scripts[s].name, scan.avatars[a].name) for s, a in scan.campaign_pairs(campaign)}
    assert pairs == {("a.wav", "ben.png"), ("b [take 2].wav", "ben.png")}
    # The studio rewrites its own campaign; a campaign file written by hand is never changed.
    assert write_campaign(bucket, "Spring launch", ["c.wav"], ["anna.png"], StudioOptions()) == name
    _file(tmp_path / "bucket" / "campaigns" / "mine.yaml", b"scripts: ['*']\n")
    assert write_campaign(bucket, "mine", ["c.wav"], ["anna.png"], StudioOptions()) == "mine-2.yaml"
    assert (tmp_path / "bucket" / "campaigns" / "mine.yaml").read_text() == "scripts: ['*']\n"
    assert STUDIO_MARK in (tmp_path / "bucket" / "campaigns" / "mine-2.yaml").read_text()


def test_languages_follow_the_browser() -> None:
    assert browser_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert browser_language("en-GB,en;q=0.9,zh;q=0.5") == "en"
    assert browser_language("fr-FR") == "en" and browser_language(None) == "en"
    assert t("msg_progress", "zh", settled=3, total=10) == "3/10 个配对"
    assert all(english and chinese and english != chinese for english, chinese in TEXT.values()), \
        "every text has both languages"


def test_the_network_needs_a_login(tmp_path: Path) -> None:
    StudioSettings().check()  # 127.0.0.1: fine without one
    with pytest.raises(StudioConfigError, match="add --auth user:password"):
        StudioSettings(host="0.0.0.0").check()
    StudioSettings(host="0.0.0.0", auth=(("ana", "secret"),)).check()
    StudioSettings(host="0.0.0.0", no_auth=True).check()
    logins = tmp_path / "logins"
    logins.write_text("# team\nana:secret\nben:pa:ss\n")
    assert read_auth(["cy:x"], str(logins)) == (("cy", "x"), ("ana", "secret"), ("ben", "pa:ss"))
    with pytest.raises(StudioConfigError, match="write it as user:password"):
        read_auth(["nopassword"], None)
    with pytest.raises(StudioConfigError, match="cannot read the login file"):
        read_auth([], str(tmp_path / "missing"))


def test_the_chosen_voice_is_the_campaign_voice(tmp_path: Path) -> None:
    bucket = Bucket(str(tmp_path / "bucket"))
    folder = tmp_path / "voices"
    piper_standin(folder / "en_US-test-medium.onnx")
    kokoro_standin(folder / "kokoro-v1.0.onnx")
    kokoro_voices(folder / "voices-v1.0.bin", ("af_test",))
    entries = voice_catalog(folder)
    for index, entry in enumerate(entries):
        name = write_campaign(bucket, f"voiced {index}", ["text-1.txt"], ["anna.png"],
                              StudioOptions(voice=entry.choice))
        text = (tmp_path / "bucket" / "campaigns" / name).read_text()
        campaign = parse_campaign(text, name)
        if entry.choice is None:  # the built-in voice: no voice: written, as before
            assert "voice" not in yaml.safe_load(text) and campaign.voice is None
        else:
            assert yaml.safe_load(text)["voice"] == entry.campaign_voice()
            assert campaign.voice == VoicePlan.single(entry.choice), entry.label
    assert len(entries) == 3
