"""Burnt-in captions: the campaign option and style, placement clear of the mouth and inside the frame, and
libass burning them in during the render's encode (real ffmpeg, real MediaPipe face tracks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.captions.burnin import (
    CaptionStyle,
    Placement,
    SubtitleOptions,
    SubtitleOptionsError,
    mouth_zone,
    place_captions,
    subtitle_options,
    text_width,
    to_ass,
)
from heygem_pipeline.engine.captions.cues import Cue
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.media.frames import FrameReader
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from tests.helpers.avatar_factory import make_template_video

FPS = 25.0
TWO_LINES = [Cue(0.0, 2.0, "Every presenter can now speak\nevery script in every language."), Cue(2.1, 3.0, "Hi.")]


# ------------------------------------------------------------------------------------------- options


def test_subtitle_options_forms() -> None:
    assert subtitle_options(None, "c.yaml") == SubtitleOptions()
    assert not SubtitleOptions().burn and SubtitleOptions().variant() == ""
    burn = subtitle_options("burn", "c.yaml")
    assert burn.burn and burn.style == CaptionStyle() and burn.variant().startswith("subs-")
    flat = subtitle_options({"mode": "burn", "size": 7, "position": "top", "outline": 0.5}, "c.yaml")
    nested = subtitle_options({"mode": "burn", "style": {"size": 7, "position": "top", "outline": 0.5}}, "c.yaml")
    assert flat == nested and flat.style.size == 7 and flat.style.position == "top"
    assert flat.variant() != burn.variant()  # another look, another video


@pytest.mark.parametrize(("value", "message"), [
    ("loud", r"c\.yaml: subtitles\.mode: Input should be 'sidecar' or 'burn' \(got 'loud'\)"),
    ({"mode": "burn", "size": 40}, r"c\.yaml: subtitles\.size: Input should be less than or equal to 15 \(got 40\)"),
    ({"mode": "burn", "colour": "red"}, r"c\.yaml: subtitles\.colour: Extra inputs are not permitted"),
    ({"mode": "burn", "color": "red"}, r"c\.yaml: subtitles\.color: String should match pattern"),
    ({"position": "middle", "size": 0}, r"c\.yaml: subtitles\.size: .*; and 1 more"),
    ({"size": 5, "style": {"size": 6}}, r"c\.yaml: subtitles: give the style keys either under 'style:'"),
    (["burn"], r"c\.yaml: subtitles: must be 'sidecar', 'burn' or a mapping"),
])
def test_subtitle_options_errors_are_one_line(value: object, message: str) -> None:
    with pytest.raises(SubtitleOptionsError, match=message) as caught:
        subtitle_options(value, "c.yaml")
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------- placement


def inside(block: tuple[int, int, int, int], width: int, height: int) -> bool:
    return 0 <= block[0] < block[2] <= width and 0 <= block[1] < block[3] <= height


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_captions_go_below_the_face_when_there_is_room() -> None:
    placement = place_captions(CaptionStyle(), 1280, 720, TWO_LINES, mouth=(560, 280, 650, 360))
    assert placement.side == "bottom" and placement.note == ""
    assert placement.font_px == round(0.055 * 720) and placement.lines == 2
    assert placement.block[3] == 720 - placement.margin_v


def test_captions_move_to_the_top_rather_than_cover_the_mouth() -> None:
    close_up = (420, 560, 860, 700)  # a face filling the frame: the mouth sits low
    placement = place_captions(CaptionStyle(), 1280, 720, TWO_LINES, mouth=close_up)
    assert placement.side == "top" and "would cover the mouth" in placement.note
    assert not overlaps(placement.block, close_up)
    # Asked for the top, with the face up there: the bottom it is.
    high = place_captions(CaptionStyle(position="top"), 1280, 720, TWO_LINES, mouth=(500, 40, 780, 160))
    assert high.side == "bottom" and "on the top they would cover the mouth" in high.note


def test_the_font_shrinks_before_captions_touch_the_mouth() -> None:
    # Room at the bottom for smaller captions only.
    style = CaptionStyle(size=10)
    placement = place_captions(style, 1280, 720, TWO_LINES, mouth=(400, 40, 880, 560))
    assert placement.side == "bottom" and placement.font_px < 72 and "stay clear of the mouth" in placement.note
    assert not overlaps(placement.block, (400, 40, 880, 560))


def test_when_nothing_is_clear_the_least_is_covered() -> None:
    everywhere = (0, 20, 1280, 700)
    placement = place_captions(CaptionStyle(), 1280, 720, TWO_LINES, mouth=everywhere)
    assert "no place is clear of the mouth" in placement.note and inside(placement.block, 1280, 720)


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1280, 720), (1920, 1080), (3840, 2160), (360, 640),
                                               (1080, 1920), (480, 480), (2160, 3840)])
def test_captions_fit_inside_any_frame(width: int, height: int) -> None:
    cues = [Cue(0.0, 2.0, "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW\n" + "m" * 42),
            Cue(2.0, 4.0, "这个季度我们发布了新的入职流程支持的语言")]
    placement = place_captions(CaptionStyle(), width, height, cues)
    assert inside(placement.block, width, height)
    widest = max(text_width(line, placement.font_px) for cue in cues for line in cue.text.split("\n"))
    assert widest <= width - 2 * placement.margin_h + 1
    assert placement.font_px <= round(0.055 * height)


def test_ass_script() -> None:
    style = CaptionStyle(color="#FFCC00", bold=True)
    placement = Placement("top", 40, 2.5, 0.0, 29, 38, 2, (0, 0, 1, 1), None, "")
    ass = to_ass([Cue(1.234, 3.5, "{\\an5}Hello\nworld"), Cue(3.6, 3.6, "empty")], style, placement, 1280, 720)
    assert "PlayResX: 1280\nPlayResY: 720" in ass
    assert "Style: Default,Noto Sans CJK SC,40,&H0000CCFF,&H0000CCFF,&H00000000,&H80000000,-1," in ass
    assert ",1,2.5,0,8,38,38,29,1" in ass  # outline border, top centre, margins
    assert "Dialogue: 0,0:00:01.23,0:00:03.50,Default,,0,0,0,,｛⧵an5｝Hello\\Nworld" in ass
    assert "empty" not in ass


def test_mouth_zone_of_a_track_covers_lips_and_chin() -> None:
    landmarks = np.zeros((3, 478, 3), np.float32)
    landmarks[:, :, :2] = [300, 200]
    landmarks[:, 10, 1], landmarks[:, 152, 1] = 100, 300  # forehead, chin: face height 200
    landmarks[1, 152, 1] = 320  # the chin drops in one frame
    landmarks[2, 152, 1] = 900  # and jumps in a frame that was not really seen
    zone = mouth_zone(landmarks, usable=np.array([True, True, False]))
    # Pad: a tenth of the median face height (200 and 220 px): 21. Lowest chin 320 + 21; lips at 200 - 21.
    assert zone == (279, 179, 321, 341)
    assert mouth_zone(landmarks, usable=np.zeros(3, bool)) is None


# ------------------------------------------------------------------------------------- burnt in, for real


def test_a_font_for_chinese_and_latin_is_installed() -> None:
    families = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=True).stdout
    assert "Noto Sans CJK SC" in families, "install fonts-noto-cjk (scripts/ensure-system-deps.sh does)"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("burnin")


def prepared_avatar(work: Path, name: str, crop: tuple[int, int, int, int] | None = None) -> Path:
    template = make_template_video(work / f"{name}.mp4", seconds=2.0)
    if crop is not None:  # a close-up: the face fills the frame and the mouth sits low
        x, y, w, h = crop
        cropped = work / f"{name}_close.mp4"
        stream = ffmpeg.input(ff_path(template)).video.crop(x, y, w, h).filter("scale", 640, 360)
        run_ffmpeg(ffmpeg.output(stream, ff_path(cropped), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p")
                   .overwrite_output(), "making a close-up")
        template = cropped
    stages.prepare_avatar(template, work / name, fps=FPS)
    stages.track_avatar(work / name)
    return work / name


@pytest.fixture(scope="module")
def script_dir(work: Path) -> Path:
    upload = work / "hello.txt"
    upload.write_text("Every presenter can now speak every script, in every language we support.")
    stages.prepare_script(upload, work / "script")
    return work / "script"


def caption_pixels(work: Path, script: Path, avatar: Path, name: str) -> tuple[np.ndarray, np.ndarray, Cue]:
    """Where the burnt-in captions changed the picture, mid-way through the longest cue; and the face track."""
    engine = create_engine("viseme")
    plain = stages.render_pair(script, avatar, work / f"{name}_plain.mp4", engine)
    burnt = stages.render_pair(script, avatar, work / f"{name}_burnt.mp4", engine,
                                 subtitles=subtitle_options("burn", "test.yaml"))
    captions = stages.load_captions(script)
    assert captions is not None
    cue = max(captions.cues, key=lambda c: c.end - c.start)
    index = int((cue.start + cue.end) / 2 * FPS)
    frames = []
    for result in (plain, burnt):
        with FrameReader(result.path, start_frame=index, max_frames=1, fps=FPS) as reader:
            frames.append(next(iter(reader)).astype(np.int16))
    changed = np.abs(frames[0] - frames[1]).max(axis=2) > 60  # captions, not encoder noise
    return changed, frames[1], cue


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_burnt_in_captions_are_inside_the_frame_and_clear_of_the_mouth(work: Path, script_dir: Path) -> None:
    avatar = prepared_avatar(work, "wide")
    changed, _, cue = caption_pixels(work, script_dir, avatar, "wide")
    assert changed.sum() > 500, "no captions were burnt in"
    box = bbox(changed)
    track = FaceTrack.load(avatar / folders.AVATAR_TRACK)
    zone = mouth_zone(track.landmarks, track.usable())
    assert zone is not None and not overlaps(box, zone)
    placement = place_captions(CaptionStyle(), track.width, track.height, stages.load_captions(script_dir).cues,
                               zone)
    assert placement.side == "bottom" and box[1] >= zone[3]
    # The estimate that placement works with contains the ink (a few pixels of anti-aliasing aside).
    x0, y0, x1, y1 = placement.block
    assert x0 - 3 <= box[0] and box[2] <= x1 + 3 and y0 - 3 <= box[1] and box[3] <= y1 + 3
    assert len(cue.text.split("\n")) in (1, 2)


def test_in_a_close_up_captions_go_to_the_top(work: Path, script_dir: Path) -> None:
    # The template's face: mouth near (300, 160) in 640×360; crop so the chin lands near the bottom, then enlarge.
    avatar = prepared_avatar(work, "close", crop=(160, 40, 294, 165))
    changed, _, _ = caption_pixels(work, script_dir, avatar, "close")
    track = FaceTrack.load(avatar / folders.AVATAR_TRACK)
    zone = mouth_zone(track.landmarks, track.usable())
    assert zone is not None
    box = bbox(changed[: zone[1]])  # captions are all above the mouth zone...
    assert changed[zone[1]:].sum() < 0.01 * changed.sum()  # ...and (almost) nothing changed below its top edge
    assert box[1] < track.height / 3 and box[3] <= zone[1]
