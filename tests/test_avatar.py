"""Avatar intake: every accepted upload format becomes an upright, constant-rate, even-sized H.264 MP4."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
import pytest

from heygem_pipeline.engine.avatar import (
    AVATAR_IMAGE_EXTENSIONS,
    AVATAR_VIDEO_EXTENSIONS,
    AvatarIntake,
    normalize_avatar,
)
from heygem_pipeline.engine.media.frames import FrameWriter, iter_frames
from heygem_pipeline.engine.media.probe import probe
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.errors import (
    EmptyFileError,
    InputError,
    NotMediaError,
    NoVideoStreamError,
    TooShortError,
    UnsupportedFormatError,
)
from tests.helpers.avatar_factory import FAST, make_portrait, make_still, make_template_video

# Codec options per container: what a phone, an editor or a screen recorder would typically put in it.
VIDEO_CODECS: dict[str, dict[str, object]] = {
    "mp4": {"vcodec": "libx264", "pix_fmt": "yuv420p", "preset": "ultrafast"},
    "mov": {"vcodec": "libx264", "pix_fmt": "yuv420p", "preset": "ultrafast"},
    "mkv": {"vcodec": "libx264", "pix_fmt": "yuv420p", "preset": "ultrafast"},
    "webm": {"vcodec": "libvpx", "deadline": "realtime", "cpu-used": 8, "b:v": "1M"},
    "flv": {"vcodec": "flv1"},
    "avi": {"vcodec": "mpeg4", "q:v": 5},
}


def stream_details(path: Path) -> tuple[dict, dict]:
    """ffprobe's raw video stream and format dictionaries (pix_fmt, frame rates, side data)."""
    result = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
                             ff_path(path)], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    videos = [s for s in data["streams"] if s["codec_type"] == "video"]
    assert len(data["streams"]) == 1 and len(videos) == 1, "normalized avatar must hold exactly one video stream"
    return videos[0], data["format"]


def assert_normalized(intake: AvatarIntake, fps: float = 25.0) -> dict:
    """The promises every normalized avatar keeps."""
    stream, _ = stream_details(intake.video)
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert stream["r_frame_rate"] == stream["avg_frame_rate"] == f"{round(fps)}/1"  # constant frame rate
    assert intake.width % 2 == 0 and intake.height % 2 == 0
    assert (stream["width"], stream["height"]) == (intake.width, intake.height)
    assert not stream.get("side_data_list") and "rotate" not in stream.get("tags", {})  # no rotation left
    assert int(stream["nb_frames"]) == intake.frame_count
    data = intake.video.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "+faststart puts the index first"
    return stream


def convert(source: Path, dest: Path, **options: object) -> Path:
    run_ffmpeg(ffmpeg.input(ff_path(source)).output(ff_path(dest), **options).overwrite_output(), "making test media")
    return dest


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_video(tmp_path_factory.mktemp("avatar") / "template.mp4", seconds=1.6)


@pytest.mark.parametrize("ext", sorted(AVATAR_VIDEO_EXTENSIONS))
def test_each_video_container_normalizes(template: Path, tmp_path: Path, ext: str) -> None:
    # Sound in the upload too, to check the template audio is dropped.
    source = tmp_path / f"upload.{ext}"
    video = ffmpeg.input(ff_path(template)).video
    audio = ffmpeg.input("sine=frequency=440:sample_rate=44100", f="lavfi", t=1.6).audio
    acodec = {"webm": "libvorbis", "flv": "libmp3lame", "avi": "libmp3lame"}.get(ext, "aac")
    run_ffmpeg(ffmpeg.output(video, audio, ff_path(source), acodec=acodec, **VIDEO_CODECS[ext]).overwrite_output(),
               "making test media")
    info = probe(source)
    assert info.audio is not None and info.video is not None
    declared = info.video.duration or info.duration  # muxers may pad a frame to the audio's length (avi does)

    intake = normalize_avatar(source, tmp_path / "out.mp4", settings=FAST)

    assert_normalized(intake)
    assert (intake.width, intake.height) == (640, 360) and not intake.was_still
    assert declared is not None and abs(intake.duration_s - declared) <= 1 / 25 + 1e-6
    assert abs(intake.duration_s - 1.6) <= 1 / 25 + 1e-6
    assert intake.rotation_applied == 0 and intake.scaled_from is None
    assert probe(intake.video).audio is None


@pytest.mark.parametrize("ext", sorted(AVATAR_IMAGE_EXTENSIONS))
def test_each_photo_format_becomes_a_still_video(tmp_path: Path, ext: str) -> None:
    source = make_still(tmp_path / f"presenter 100%d photo.{ext}")  # '%' must not be a pattern

    intake = normalize_avatar(source, tmp_path / "out.mp4", fps=25, still_seconds=2.0, settings=FAST)

    assert_normalized(intake)
    assert intake.was_still and intake.frame_count == 50 and intake.duration_s == pytest.approx(2.0)
    assert (intake.width, intake.height) == (640, 360)
    first = next(iter_frames(intake.video))
    assert np.abs(first.astype(int) - make_portrait().astype(int)).mean() < 6  # the picture itself, not a blank


def test_rotation_metadata_is_applied_and_removed(tmp_path: Path) -> None:
    upright = make_portrait((360, 640))  # a phone held upright: 360 wide, 640 tall
    stored = cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE)  # the sensor stores it on its side
    plain = tmp_path / "plain.mp4"
    with FrameWriter(plain, 640, 360, 25, settings=FAST) as writer:
        for _ in range(30):
            writer.write(stored)
    tagged = convert(plain, tmp_path / "phone.mp4", c="copy", **{"metadata:s:v:0": "rotate=90"})
    rotation = probe(tagged).video.rotation
    assert rotation in (90, 270), "ffmpeg should have written a quarter-turn display matrix"

    intake = normalize_avatar(tagged, tmp_path / "out.mp4", settings=FAST)

    assert_normalized(intake)
    assert (intake.width, intake.height) == (360, 640)
    assert intake.rotation_applied == rotation
    assert probe(intake.video).video.rotation == 0
    turn = cv2.ROTATE_90_CLOCKWISE if rotation == 90 else cv2.ROTATE_90_COUNTERCLOCKWISE
    first = next(iter_frames(intake.video))
    assert np.abs(first.astype(int) - cv2.rotate(stored, turn).astype(int)).mean() < 6


def test_exif_orientation_of_a_photo_is_applied(tmp_path: Path) -> None:
    from PIL import Image

    upright = make_portrait()
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # EXIF 6: turn 90° clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    source = tmp_path / "phone.jpg"
    Image.fromarray(stored[..., ::-1]).save(source, exif=exif.tobytes(), quality=95)

    intake = normalize_avatar(source, tmp_path / "out.mp4", still_seconds=1.0, settings=FAST)

    assert (intake.width, intake.height) == (640, 360) and intake.rotation_applied == 90
    first = next(iter_frames(intake.video))
    assert np.abs(first.astype(int) - upright.astype(int)).mean() < 6


def test_4k_is_scaled_to_1920_keeping_aspect(tmp_path: Path) -> None:
    source = tmp_path / "4k.mp4"
    run_ffmpeg(ffmpeg.input("testsrc2=size=3840x2160:rate=5", f="lavfi", t=2)
               .output(ff_path(source), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p").overwrite_output(),
               "making test media")

    intake = normalize_avatar(source, tmp_path / "out.mp4", fps=10, settings=FAST)

    assert_normalized(intake, fps=10)
    assert (intake.width, intake.height) == (1920, 1080) and intake.scaled_from == (3840, 2160)
    assert intake.duration_s == pytest.approx(2.0, abs=0.1)


def test_small_video_is_left_alone(template: Path, tmp_path: Path) -> None:
    intake = normalize_avatar(template, tmp_path / "out.mp4", max_side=1920, settings=FAST)
    assert (intake.width, intake.height) == (640, 360) and intake.scaled_from is None


@pytest.mark.parametrize(("rate", "size"), [("30", "640x360"), ("30000/1001", "641x361"), ("24", "639x359")])
def test_frame_rate_conversion_keeps_duration_and_makes_even_sizes(tmp_path: Path, rate: str, size: str) -> None:
    source = tmp_path / "odd.mkv"
    run_ffmpeg(ffmpeg.input(f"testsrc=size={size}:rate={rate}", f="lavfi", t=2.0)
               .output(ff_path(source), vcodec="libx264", preset="ultrafast", pix_fmt="yuv444p").overwrite_output(),
               "making test media")
    declared = probe(source).duration
    assert declared is not None

    intake = normalize_avatar(source, tmp_path / "out.mp4", fps=25, settings=FAST)

    assert_normalized(intake)
    width, height = (int(v) for v in size.split("x"))
    assert (intake.width, intake.height) == (width - width % 2, height - height % 2)
    assert abs(intake.duration_s - declared) <= 1 / 25 + 1e-6


# ------------------------------------------------------------------------------------------------ bad inputs


def test_unsupported_extension(tmp_path: Path) -> None:
    source = tmp_path / "presenter.gif"
    source.write_bytes(b"GIF89a")
    with pytest.raises(UnsupportedFormatError, match=re.escape(str(source))) as info:
        normalize_avatar(source, tmp_path / "out.mp4")
    assert "mp4" in info.value.fix and "png" in info.value.fix


def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.mp4"
    source.touch()
    with pytest.raises(EmptyFileError, match=re.escape(str(source))):
        normalize_avatar(source, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_text_renamed_to_mp4(tmp_path: Path) -> None:
    source = tmp_path / "notes.mp4"
    source.write_text("This is the script for Monday's video.\nNot a video at all.\n")
    with pytest.raises(NotMediaError, match=re.escape(str(source))) as info:
        normalize_avatar(source, tmp_path / "out.mp4")
    assert "presenter" in info.value.fix


def test_audio_only_upload(tmp_path: Path) -> None:
    source = tmp_path / "voice.mp4"
    run_ffmpeg(ffmpeg.input("sine=frequency=300", f="lavfi", t=2).output(ff_path(source), acodec="aac")
               .overwrite_output(), "making test media")
    with pytest.raises(NoVideoStreamError, match=re.escape(str(source))) as info:
        normalize_avatar(source, tmp_path / "out.mp4")
    assert info.value.fix == "upload a video or a photo of the presenter"
    assert isinstance(info.value, InputError)


def _truncated(template: Path, dest: Path, share: float) -> Path:
    """A faststart MP4 cut off after ``share`` of its bytes, like an interrupted upload."""
    full = convert(template, dest.with_name("full.mp4"), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p",
                   movflags="+faststart")
    data = full.read_bytes()
    dest.write_bytes(data[: int(len(data) * share)])
    return dest


def test_truncated_upload_keeps_what_decodes(template: Path, tmp_path: Path) -> None:
    source = _truncated(template, tmp_path / "cut.mp4", 0.8)

    intake = normalize_avatar(source, tmp_path / "out.mp4", settings=FAST)

    assert_normalized(intake)
    assert 1.0 <= intake.duration_s < 1.6
    assert any("cut short" in warning for warning in intake.warnings)


def test_truncated_upload_under_one_second(template: Path, tmp_path: Path) -> None:
    source = _truncated(template, tmp_path / "stub.mp4", 0.3)
    with pytest.raises(TooShortError, match=re.escape(str(source))):
        normalize_avatar(source, tmp_path / "out.mp4", settings=FAST)
    assert not (tmp_path / "out.mp4").exists(), "nothing half-written is left behind"
