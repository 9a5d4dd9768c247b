"""Avatar intake: turn an uploaded presenter video or photo into the one video form the renderer reads.

Uploads come from phones, screen recorders and editors: variable frame rates, rotation flags instead of rotated
pixels, 4K, odd sizes, stray audio, photos with EXIF orientation. ``normalize_avatar`` fixes all of that in one
ffmpeg pass so every later stage can assume: upright, constant ``fps``, long side ≤ ``max_side``, even dimensions,
H.264 yuv420p MP4 without audio, and a known frame count.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ffmpeg

from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.engine.media.probe import MediaInfo, probe
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.errors import (
    DamagedFileError,
    NoFaceError,
    NotMediaError,
    NoVideoStreamError,
    ToolFailedError,
    TooShortError,
    UnsupportedFormatError,
)
from heygem_pipeline.settings import DEFAULT_FPS, DEFAULT_STILL_SECONDS, ToolLimits

AVATAR_VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "mkv", "webm", "flv", "avi"})
AVATAR_IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp"})
AVATAR_EXTENSIONS = AVATAR_VIDEO_EXTENSIONS | AVATAR_IMAGE_EXTENSIONS

AVATAR_FIX = "upload a video or a photo of the presenter"
MIN_AVATAR_SECONDS = 1.0
MIN_SIDE_PX = 64  # below this there is no face worth tracking

# What ffmpeg's stderr says when it cannot decode its input (damaged or cut-short data). Matched against the
# tool's stderr only (``ToolFailedError.stderr_tail``), never against a message that also holds the file's name.
# A deterministic failure without one of these (an encoder missing from the ffmpeg build, a filter bug) stays a
# ``ToolFailedError``: it fails at once with ffmpeg's words, and does not send the user to upload again.
_DECODE_FAILURES = ("invalid data", "partial file", "after eof", "prematurely", "moov atom", "error while decoding",
                    "could not find codec parameters", "no frame")

# EXIF orientation → (ffmpeg filters that make the picture upright, degrees clockwise applied, mirrored).
_EXIF_ORIENTATION: dict[int, tuple[list[tuple[str, tuple]], int, bool]] = {
    1: ([], 0, False),
    2: ([("hflip", ())], 0, True),
    3: ([("hflip", ()), ("vflip", ())], 180, False),
    4: ([("vflip", ())], 0, True),
    5: ([("transpose", ("cclock_flip",))], 270, True),
    6: ([("transpose", ("clock",))], 90, False),
    7: ([("transpose", ("clock_flip",))], 90, True),
    8: ([("transpose", ("cclock",))], 270, False),
}


@dataclass
class AvatarIntake:
    """What normalization produced, for the manifest and for later stages."""

    source: Path
    video: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    was_still: bool
    rotation_applied: int  # degrees clockwise the picture was turned to be upright (0, 90, 180, 270)
    scaled_from: tuple[int, int] | None  # upright size before downscaling, None when not scaled
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["source"], data["video"] = str(self.source), str(self.video)
        data["scaled_from"] = list(self.scaled_from) if self.scaled_from else None
        return data


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of a photo (1 = upright), read with Pillow (a scikit-image dependency)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            value = int(image.getexif().get(0x0112, 1))
    except Exception:  # no Pillow, or a format it cannot parse: ffprobe already vouched for the file
        return 1
    return value if value in _EXIF_ORIENTATION else 1


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int, bool]:
    """Upright output size: long side ≤ ``max_side`` keeping aspect, both even. Returns (w, h, scaled)."""
    longest = max(width, height)
    if longest > max_side:
        ratio = max_side / longest
        return max(2, round(width * ratio / 2) * 2), max(2, round(height * ratio / 2) * 2), True
    return width - width % 2, height - height % 2, False


def _probe_avatar(source: Path, limits: ToolLimits | None) -> MediaInfo:
    try:
        info = probe(source, limits=limits)
    except NotMediaError as error:
        if not source.is_file():
            raise  # "file does not exist" says it best
        raise NotMediaError(source, "not a readable video or photo (another kind of file, or damaged or cut short "
                                    "before its index)", f"{AVATAR_FIX} (mp4, mov, mkv, webm, flv, avi, png, jpg, "
                                                         "webp)") from error
    if info.video is None:
        what = "it is an audio file" if info.audio is not None else "no picture in it"
        raise NoVideoStreamError(source, f"has no video stream ({what})", AVATAR_FIX)
    return info


def normalize_avatar(source: str | os.PathLike[str], dest_mp4: str | os.PathLike[str], *, fps: float = DEFAULT_FPS,
                     still_seconds: float = DEFAULT_STILL_SECONDS, max_side: int = 1920,
                     settings: EncodeSettings = EncodeSettings(),  # noqa: B008 - frozen dataclass
                     limits: ToolLimits | None = None) -> AvatarIntake:
    """Normalize an avatar upload to ``dest_mp4`` (written atomically) in one ffmpeg pass.

    Videos: constant ``fps``, rotation metadata applied (ffmpeg autorotates on decode; the output carries no
    rotation), long side ≤ ``max_side``, even dimensions, H.264 yuv420p, audio dropped, ``+faststart``. A photo
    becomes ``still_seconds`` of video. A truncated upload keeps what decodes; under 1 s raises ``TooShortError``.
    ``limits``: of ffprobe and ffmpeg (default: from the environment).
    """
    source, dest = Path(source), Path(dest_mp4)
    if fps <= 0 or still_seconds < MIN_AVATAR_SECONDS or max_side < MIN_SIDE_PX:
        raise ValueError("fps must be positive, still_seconds at least 1 and max_side at least 64")
    max_side -= max_side % 2
    if _extension(source) not in AVATAR_EXTENSIONS:
        problem = f"'.{_extension(source)}' is not an accepted avatar format" if source.suffix else "has no extension"
        raise UnsupportedFormatError(source, problem, f"{AVATAR_FIX} as " + ", ".join(sorted(AVATAR_EXTENSIONS)))
    info = _probe_avatar(source, limits)
    video = info.video
    assert video is not None
    still = video.is_image
    warnings: list[str] = []

    # Orientation: what the picture must be turned by, and the upright size that results.
    filters: list[tuple[str, tuple]] = []
    if still:
        filters, rotation, mirrored = _EXIF_ORIENTATION[_exif_orientation(source)]
        if mirrored:
            warnings.append("photo was stored mirrored (EXIF orientation); it was flipped back")
    else:
        rotation = video.rotation if video.rotation in (0, 90, 180, 270) else 0
        if video.rotation != rotation:
            warnings.append(f"rotation tag of {video.rotation}° is not a quarter turn and was ignored")
    width, height = (video.height, video.width) if rotation in (90, 270) else (video.width, video.height)
    if min(width, height) < MIN_SIDE_PX:
        raise NoFaceError(source, f"picture is only {width}×{height} px, too small to show a face",
                          "upload a video or photo at least 480 px on its short side")
    out_w, out_h, scaled = _target_size(width, height, max_side)
    if rotation:
        warnings.append(f"turned {rotation}° clockwise to be upright (rotation metadata applied)")
    if scaled:
        warnings.append(f"scaled down from {width}×{height} to {out_w}×{out_h}")
    if max(out_w, out_h) < 480:
        warnings.append(f"low resolution ({out_w}×{out_h}): the lip-synced video will look soft")
    if still:
        warnings.append("a still photo: the presenter will not move; a short video looks more natural")
    elif video.fps and video.fps < fps * 0.8:
        warnings.append(f"source frame rate {video.fps:.3g} fps is below {fps:g}: frames are repeated, motion may "
                        "judder")

    if still:
        # image2 with pattern_type=none: loop one picture at the output rate, and never read '%' in a name as a
        # pattern. noautorotate: jpg EXIF would be applied by ffmpeg but webp's not; we apply both ourselves.
        stream = ffmpeg.input(ff_path(source), f="image2", pattern_type="none", loop=1, framerate=fps,
                              noautorotate=None).video
    else:
        stream = ffmpeg.input(ff_path(source)).video  # autorotate (ffmpeg's default) applies the rotation tag
    for name, args in filters:
        stream = stream.filter(name, *args)
    stream = stream.filter("fps", fps=fps)  # constant frame rate: frames dropped or repeated, duration kept
    if scaled:
        stream = stream.filter("scale", out_w, out_h, flags="lanczos")
    elif (out_w, out_h) != (width, height):
        stream = stream.crop(0, 0, out_w, out_h)  # odd size: drop the last row/column rather than resample
    stream = stream.filter("format", "yuv420p")
    extra: dict[str, object] = {"frames:v": max(1, round(still_seconds * fps))} if still else {}

    with atomic_output(dest) as tmp:
        command = ffmpeg.output(stream, ff_path(tmp), f="mp4", map_metadata=-1, an=None,
                                **settings.video_options(), **extra).overwrite_output()
        try:
            run_ffmpeg(command, f"normalizing avatar {source}", subject=source,
                       media_seconds=still_seconds if still else (video.duration or info.duration), limits=limits)
        except ToolFailedError as error:
            decode_failure = any(marker in error.stderr_tail.lower() for marker in _DECODE_FAILURES)
            if error.transient or not decode_failure:
                raise  # the disk or the share failed (a retry may work), or the machine did (not the upload)
            # The same bytes fail the same way on every attempt: the user's file, not a fault to retry. ffmpeg's
            # own words stay on the cause (error.stderr_tail) for the logs.
            raise DamagedFileError(source, "no video frame could be decoded (the upload looks cut short or "
                                           "damaged)", "upload the file again (or export it again)") from error
        out = probe(tmp, limits=limits).video
        if out is None or (out.width, out.height) != (out_w, out_h) or out.rotation:
            raise RuntimeError(f"normalizing avatar {source}: expected {out_w}×{out_h} upright, got {out}")
        frame_count = out.frame_count or 0
        duration = frame_count / fps
        if duration < MIN_AVATAR_SECONDS:
            raise TooShortError(source, f"only {duration:.2f} s of video could be decoded "
                                        f"(at least {MIN_AVATAR_SECONDS:g} s needed)",
                                "upload a longer template, or upload it again if it was cut short")
    declared = video.duration or info.duration
    if not still and declared and declared - duration > max(2.0 / fps, 0.05 * declared):
        warnings.append(f"decoded {duration:.2f} s of the {declared:.2f} s the file declares: the upload looks cut "
                        "short; upload it again for the full template")
    return AvatarIntake(
        source=source,
        video=dest,
        width=out_w,
        height=out_h,
        fps=fps,
        frame_count=frame_count,
        duration_s=round(duration, 6),
        was_still=still,
        rotation_applied=rotation,
        scaled_from=(width, height) if scaled else None,
        warnings=warnings,
    )
