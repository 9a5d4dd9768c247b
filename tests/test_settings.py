"""Settings are read from the environment once and validated: a bad value fails with one line naming the variable,
what it must be and what it was; every default is written once."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heygem_pipeline import settings as settings_module
from heygem_pipeline.engine.audio.voices.choice import EspeakChoice
from heygem_pipeline.engine.avatar import MIN_AVATAR_SECONDS
from heygem_pipeline.engine.lipsync.registry import ENGINE_NAMES
from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.errors import HeygemError, SettingsError
from heygem_pipeline.factory.campaigns import MediaOptions, RenderOptions
from heygem_pipeline.factory.voicing import VoicePlan
from heygem_pipeline.settings import Settings, ToolLimits
from tests.helpers import REPO

VARIABLES = [*settings_module.SETTINGS_VARIABLES, *settings_module.TOOL_LIMIT_VARIABLES, "DAGSTER_HOME",
             "HEYGEM_WAV2LIP_CHECKPOINT"]
PRESETS = "ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow, placebo"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


BAD = [
    ("HEYGEM_CRF", "abc", "HEYGEM_CRF must be an integer 0–51, got 'abc'"),
    ("HEYGEM_CRF", "52", "HEYGEM_CRF must be an integer 0–51, got '52'"),
    ("HEYGEM_CRF", "-1", "HEYGEM_CRF must be an integer 0–51, got '-1'"),
    ("HEYGEM_CRF", "18.5", "HEYGEM_CRF must be an integer 0–51, got '18.5'"),
    ("HEYGEM_FPS", "-1", "HEYGEM_FPS must be a positive number, got '-1'"),
    ("HEYGEM_FPS", "0", "HEYGEM_FPS must be a positive number, got '0'"),
    ("HEYGEM_FPS", "fast", "HEYGEM_FPS must be a positive number, got 'fast'"),
    ("HEYGEM_FPS", "inf", "HEYGEM_FPS must be a positive number, got 'inf'"),
    ("HEYGEM_STILL_SECONDS", "0.5", "HEYGEM_STILL_SECONDS must be a number of seconds ≥ 1, got '0.5'"),
    ("HEYGEM_ENGINE", "sadtalker", "HEYGEM_ENGINE must be one of viseme, wav2lip, musetalk, got 'sadtalker'"),
    ("HEYGEM_ENGINE", "Viseme", "HEYGEM_ENGINE must be one of viseme, wav2lip, musetalk, got 'Viseme'"),
    ("HEYGEM_PRESET", "quick", f"HEYGEM_PRESET must be an x264 preset ({PRESETS}), got 'quick'"),
    ("HEYGEM_FFMPEG_THREADS", "-2", "HEYGEM_FFMPEG_THREADS must be a whole number of threads (0: ffmpeg's choice), "
                                    "got '-2'"),
    ("HEYGEM_FFMPEG_THREADS", "many", "HEYGEM_FFMPEG_THREADS must be a whole number of threads (0: ffmpeg's "
                                      "choice), got 'many'"),
    ("HEYGEM_WAV2LIP_BATCH", "0", "HEYGEM_WAV2LIP_BATCH must be a positive integer, got '0'"),
    ("HEYGEM_TIMEZONE", "Mars/Olympus", "HEYGEM_TIMEZONE must be an IANA time zone such as UTC or Europe/Berlin, "
                                        "got 'Mars/Olympus'"),
    ("HEYGEM_TIMEZONE", "../../etc/passwd", "HEYGEM_TIMEZONE must be an IANA time zone such as UTC or "
                                            "Europe/Berlin, got '../../etc/passwd'"),
    ("HEYGEM_AUTOMATION", "maybe", "HEYGEM_AUTOMATION must be on or off (1/0, true/false, yes/no), got 'maybe'"),
    ("HEYGEM_STALL_SECONDS", "soon", "HEYGEM_STALL_SECONDS must be a positive number, got 'soon'"),
    ("HEYGEM_TOOL_TIMEOUT_FACTOR", "-3", "HEYGEM_TOOL_TIMEOUT_FACTOR must be a positive number, got '-3'"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_bad_value_names_the_variable_the_range_and_the_value(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                   value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value) == message
    assert isinstance(caught.value, HeygemError) and isinstance(caught.value, ValueError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no pydantic dump behind it


def test_every_bad_value_is_reported_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEYGEM_CRF", "abc")
    monkeypatch.setenv("HEYGEM_FPS", "-1")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value) == ("HEYGEM_FPS must be a positive number, got '-1'; "
                                 "HEYGEM_CRF must be an integer 0–51, got 'abc'")


GOOD = [
    ("HEYGEM_BUCKET", "s3://factory/bucket", "bucket", "s3://factory/bucket"),
    ("HEYGEM_FPS", "30", "fps", 30.0),
    ("HEYGEM_FPS", "29.97", "fps", 29.97),
    ("HEYGEM_STILL_SECONDS", "1", "still_seconds", 1.0),
    ("HEYGEM_ENGINE", "wav2lip", "engine", "wav2lip"),
    ("HEYGEM_VOICE", "cmn", "voice", "cmn"),
    ("HEYGEM_CRF", "0", "crf", 0),
    ("HEYGEM_CRF", " 51 ", "crf", 51),
    ("HEYGEM_PRESET", "medium", "preset", "medium"),
    ("HEYGEM_FFMPEG_THREADS", "0", "ffmpeg_threads", None),
    ("HEYGEM_FFMPEG_THREADS", "2", "ffmpeg_threads", 2),
    ("HEYGEM_WAV2LIP_CHECKPOINT", " /weights/wav2lip.pth ", "wav2lip_checkpoint", "/weights/wav2lip.pth"),
    ("HEYGEM_WAV2LIP_BATCH", "16", "wav2lip_batch_size", 16),
    ("HEYGEM_TIMEZONE", "Europe/Berlin", "timezone", "Europe/Berlin"),
    ("HEYGEM_AUTOMATION", "0", "automation", False),
    ("HEYGEM_AUTOMATION", "Off", "automation", False),
    ("HEYGEM_AUTOMATION", "yes", "automation", True),
    ("HEYGEM_CRF", "   ", "crf", 18),  # blank: unset
]


@pytest.mark.parametrize(("name", "value", "attribute", "expected"), GOOD, ids=[f"{n}={v}" for n, v, _, _ in GOOD])
def test_good_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str, attribute: str, expected: object) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(Settings.from_env(), attribute) == expected


def test_tool_limits_and_dagster_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEYGEM_STALL_SECONDS", "5")
    monkeypatch.setenv("HEYGEM_TOOL_TIMEOUT_FACTOR", "2.5")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    settings = Settings.from_env()
    assert settings.tool_limits == ToolLimits(5.0, 2.5) == ToolLimits.from_env()
    assert settings.dagster_home == tmp_path.resolve()


def test_defaults() -> None:
    settings = Settings.from_env()
    assert settings == Settings(dagster_home=Path(".dagster_home").resolve())
    assert (settings.bucket, settings.fps, settings.still_seconds, settings.engine, settings.voice) == (
        "data/bucket", 25.0, 5.0, "viseme", "en-us")
    assert (settings.crf, settings.preset, settings.ffmpeg_threads, settings.wav2lip_batch_size) == (
        18, "veryfast", None, 128)
    assert (settings.wav2lip_checkpoint, settings.timezone, settings.automation) == (None, "UTC", True)
    assert settings.tool_limits == ToolLimits(60.0, 10.0)


def test_every_default_is_the_settings_default() -> None:
    """The options, the engine's keyword defaults and the resources all start from the same values."""
    from heygem_pipeline.engine import stages
    from heygem_pipeline.engine.audio.intake import normalize_script, synthesize_speech
    from heygem_pipeline.engine.avatar import normalize_avatar
    from resources import build_resources
    from resources.engine import LipSyncEngineResource
    from resources.ffmpeg import FFmpegResource

    settings = Settings()
    assert MediaOptions() == MediaOptions.from_settings(settings) == FFmpegResource().media_options()
    assert RenderOptions() == RenderOptions.from_settings(settings, settings.engine)
    assert RenderOptions() == FFmpegResource().render_defaults(LipSyncEngineResource().engine)
    encode = EncodeSettings()
    assert (encode.crf, encode.preset) == (settings.crf, settings.preset)
    assert LipSyncEngineResource().batch_size == settings.wav2lip_batch_size
    assert FFmpegResource().tool_limits() == settings.tool_limits
    resources = build_resources(settings)
    assert resources["ffmpeg"].media_options() == MediaOptions.from_settings(settings)
    assert resources["ffmpeg"].tool_limits() == settings.tool_limits
    for function in (stages.prepare_avatar, normalize_avatar):
        defaults = function.__kwdefaults__
        assert (defaults["fps"], defaults["still_seconds"]) == (settings.fps, settings.still_seconds)
    assert stages.prepare_script.__kwdefaults__["voice"] == settings.voice
    assert normalize_script.__kwdefaults__["voice"] == synthesize_speech.__defaults__[0] == settings.voice
    assert settings_module.MIN_STILL_SECONDS == MIN_AVATAR_SECONDS
    assert ENGINE_NAMES == settings_module.ENGINE_NAMES


def test_options_follow_the_settings() -> None:
    settings = Settings(fps=30.0, still_seconds=3.0, voice="cmn", crf=23, preset="fast", engine="wav2lip")
    assert MediaOptions.from_settings(settings) == MediaOptions(
        fps=30.0, still_seconds=3.0, voice=VoicePlan.single(EspeakChoice(speaker="cmn")))
    assert RenderOptions.from_settings(settings, "viseme") == RenderOptions(engine="viseme", crf=23, preset="fast")


def test_settings_stay_frozen_dataclasses() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.crf = 20  # type: ignore[misc]
    assert dataclasses.replace(settings, crf=20).crf == 20
    assert hash(ToolLimits(1.0, 2.0)) == hash(ToolLimits(1.0, 2.0))


def test_the_checkpoint_fallback_goes_through_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from heygem_pipeline.engine.lipsync.wav2lip.checkpoint import resolve_checkpoint
    from heygem_pipeline.errors import CheckpointError

    monkeypatch.setenv("HEYGEM_WAV2LIP_CHECKPOINT", "  ")
    with pytest.raises(CheckpointError, match="no Wav2Lip checkpoint configured"):
        resolve_checkpoint()
    monkeypatch.setenv("HEYGEM_WAV2LIP_CHECKPOINT", "/nowhere/wav2lip.pth")
    with pytest.raises(CheckpointError, match=re.escape("/nowhere/wav2lip.pth: checkpoint file not found")):
        resolve_checkpoint()


def heygem(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", *args], capture_output=True, text=True,
                          env={**env, **variables}, cwd=REPO, timeout=120)


@pytest.mark.parametrize("command", [["run", "--bucket", "/nonexistent/bucket"],
                                     ["render", "--audio", "a.wav", "--avatar", "b.mp4", "-o", "c.mp4"]])
def test_the_cli_prints_one_line_and_exits_2(command: list[str]) -> None:
    result = heygem(*command, HEYGEM_CRF="abc")
    assert result.returncode == 2
    assert result.stderr == "error: HEYGEM_CRF must be an integer 0–51, got 'abc'\n"
    assert result.stdout == ""


def test_help_works_whatever_the_environment_holds() -> None:
    result = heygem("render", "--help", HEYGEM_CRF="abc")
    assert result.returncode == 0 and "heygem render" in result.stdout


def test_the_code_location_fails_to_load_with_the_same_line() -> None:
    result = subprocess.run([sys.executable, "-c", "import heygem_pipeline.definitions"], capture_output=True,
                            text=True, cwd=REPO, timeout=120,
                            env={**{k: v for k, v in os.environ.items() if k not in VARIABLES}, "HEYGEM_FPS": "-1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "heygem_pipeline.errors.SettingsError: HEYGEM_FPS must be a positive number, got '-1'")
    assert "pydantic" not in result.stderr and "ValidationError" not in result.stderr
