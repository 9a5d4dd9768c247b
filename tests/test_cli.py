"""The `heygem` command line: help for every subcommand, and the single-pair trial render."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from heygem_pipeline.cli import build_parser, progress_bar
from heygem_pipeline.engine.contact_sheet import CAPTION, TILE
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.settings import Settings
from tests.helpers.avatar_factory import make_template_video
from tests.helpers.media_factory import make_speech

SUBCOMMANDS = ("demo", "run", "render", "ui")


def heygem(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heygem_pipeline.cli", *args], capture_output=True, text=True,
                          check=check, timeout=300)


def test_help_lists_every_subcommand() -> None:
    out = heygem("--help").stdout
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name: str) -> None:
    out = heygem(name, "--help").stdout
    assert f"heygem {name}" in out


def test_parser_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["render", "--audio", "a.wav", "--avatar", "b.mp4", "-o", "c.mp4"])
    assert args.engine is None and args.fps is None  # filled from HEYGEM_ENGINE / HEYGEM_FPS by main()


def test_ffmpeg_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from resources import build_resources

    monkeypatch.delenv("HEYGEM_FFMPEG_THREADS", raising=False)
    assert Settings.from_env().ffmpeg_threads is None
    assert build_resources(Settings.from_env())["ffmpeg"].encode_settings().threads is None
    monkeypatch.setenv("HEYGEM_FFMPEG_THREADS", "2")
    settings = Settings.from_env()
    assert settings.ffmpeg_threads == 2
    assert build_resources(settings)["ffmpeg"].encode_settings().threads == 2


def test_render_a_raw_pair(tmp_path: Path) -> None:
    voice = make_speech(tmp_path / "my voice.wav", "A quick trial of one voice and one face.")
    transcript = tmp_path / "my voice.txt"
    transcript.write_text("A quick trial of one voice and one face.")
    avatar = make_template_video(tmp_path / "-presenter 'one'.mp4", seconds=1.5)
    output = tmp_path / "out" / "trial.mp4"
    sheet = tmp_path / "sheet.png"
    result = heygem("render", "--audio", str(voice), "--avatar", str(avatar), "-o", str(output),
                    "--transcript", str(transcript), "--subtitles", "burn", "--contact-sheet", str(sheet))
    summary = result.stdout.strip().splitlines()[-1]
    assert str(output) in summary and "frames at 25 fps" in summary and "sync offset" in summary
    assert "engine viseme" in summary and "subtitles srt + vtt (burnt in)" in summary
    assert "A quick trial of one voice and one face." in output.with_suffix(".srt").read_text()
    assert output.with_suffix(".vtt").read_text().startswith("WEBVTT")
    info = probe(output)
    assert info.video is not None and info.audio is not None and info.video.width == 640
    # The template's mouth, three loudest and three quietest output mouths, side by side.
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] == TILE + CAPTION and image.shape[1] >= 7 * TILE


def test_render_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp3"
    fake.write_text("this is not audio")
    avatar = tmp_path / "a.mp4"
    avatar.write_bytes(b"")
    result = heygem("render", "--audio", str(fake), "--avatar", str(avatar), "-o", str(tmp_path / "o.mp4"),
                    check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.mp3" in errors[0]
    assert not (tmp_path / "o.mp4").exists()


def test_wav2lip_without_a_checkpoint_fails_before_any_work(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEYGEM_WAV2LIP_CHECKPOINT", raising=False)
    result = heygem("render", "--audio", str(tmp_path / "none.wav"), "--avatar", str(tmp_path / "none.mp4"),
                    "-o", str(tmp_path / "o.mp4"), "--engine", "wav2lip", check=False)
    assert result.returncode == 2
    assert "HEYGEM_WAV2LIP_CHECKPOINT" in result.stderr
    assert "analysing voice" not in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar("tracking face") as progress:
        progress(50, 100)
        progress(100, 100)
    assert sys.stderr.getvalue() == ""  # a log or a pipe gets no carriage-return bar

    monkeypatch.setattr(sys, "stderr", _Terminal())
    with progress_bar("tracking face") as progress:
        progress(50, 100)
        progress(100, 100)
    with progress_bar("rendering (viseme)") as progress:
        progress(7, None)  # total not known
    drawn = sys.stderr.getvalue()
    assert "tracking face: 100%" in drawn and "100/100" in drawn and "frames/s" in drawn
    assert "rendering (viseme): 7 frames" in drawn
