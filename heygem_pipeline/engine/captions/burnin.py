"""Captions burnt into the picture: the campaign's ``subtitles:`` option, its style, and where captions go.

The style is validated with pydantic (a campaign file's mistake is one clear line). Every length is a share of the
frame height, so a style looks the same at 360p and 4K, in landscape and portrait. ``place_captions`` keeps the
captions inside the frame (the font shrinks until the longest line fits the width) and clear of the mouth: the
lowest the mouth and chin ever come in the face track decides whether they fit below the face or go to the top.
``write_ass`` turns cues into an ASS script for libass, which ``media.FrameWriter`` burns in during the render's
own encode (no second pass).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from heygem_pipeline.engine.captions.cues import Cue
from heygem_pipeline.engine.captions.text import is_wide
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.errors import HeygemError

SIDECAR: Final = "sidecar"
BURN: Final = "burn"
DEFAULT_FONT = "Noto Sans CJK SC"  # fonts-noto-cjk: CJK and Latin in one face

# Font metrics in units of the ASS font size (which libass, like VSFilter, maps to the font's line height, not
# its em): measured on burnt-in frames of Noto Sans CJK SC (see tests/test_burnin.py).
LINE_HEIGHT = 1.0  # per line (measured: 0.96 for one line, 1.8 for two, ink included)
WIDE_ADVANCE = 0.70  # a CJK character (measured 0.686)
NARROW_ADVANCE = 0.42  # a Latin character: running text measured 0.33-0.35, capitals 0.43
BOLD_WIDTH = 1.08
SHRINK_STEPS = (1.0, 0.85, 0.7, 0.55)  # font sizes tried (shares of the style's) to keep the mouth clear
MOUTH = (0, 13, 14, 17, 61, 291, 78, 308)  # lips in the 478-point face mesh
CHIN = 152


class SubtitleOptionsError(HeygemError, ValueError):
    """A campaign's ``subtitles:`` value that cannot be used."""


class CaptionStyle(BaseModel):
    """How burnt-in captions look. Lengths are percentages of the frame height."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    font: str = Field(default=DEFAULT_FONT, min_length=1, max_length=100)
    size: float = Field(default=5.5, ge=1.0, le=15.0, description="line height, % of the frame height")
    position: Literal["auto", "bottom", "top"] = Field(
        default="auto", description="preferred side; captions move to the other side rather than cover the mouth")
    outline: float = Field(default=0.35, ge=0.0, le=3.0, description="outline thickness, % of the frame height")
    shadow: float = Field(default=0.0, ge=0.0, le=3.0, description="shadow offset, % of the frame height")
    margin: float = Field(default=4.0, ge=0.0, le=25.0, description="distance from the frame's edge, % of its height")
    color: str = Field(default="#FFFFFF", pattern=r"^#[0-9A-Fa-f]{6}$")
    outline_color: str = Field(default="#000000", pattern=r"^#[0-9A-Fa-f]{6}$")
    bold: bool = False
    box: bool = Field(default=False, description="an opaque box (outline_color) behind the text instead of an outline")


class SubtitleOptions(BaseModel):
    """A campaign's ``subtitles:``: ``sidecar`` (SRT and WebVTT beside each video, the default) or ``burn`` (also
    burnt into the picture), with the style for burning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sidecar", "burn"] = SIDECAR
    style: CaptionStyle = CaptionStyle()

    @property
    def burn(self) -> bool:
        return self.mode == BURN

    def variant(self) -> str:
        """A short token of what changes the rendered video (for render folders and stamps): '' unless burning."""
        if not self.burn:
            return ""
        return "subs-" + hashlib.sha1(self.style.model_dump_json().encode()).hexdigest()[:8]


def subtitle_fields(value: Any) -> Any:
    """A ``subtitles:`` value in ``SubtitleOptions``' own shape: absent, ``sidecar``, ``burn``, or a mapping with
    ``mode:`` and style keys (``size``, ``position``, ``outline``, …) side by side or under ``style:``. A pydantic
    before-validator (see ``SubtitlesValue``): its errors are pydantic's, located at the ``subtitles`` value."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, Mapping):
        data = {str(k): v for k, v in value.items()}
        style = {k: data.pop(k) for k in list(data) if k in CaptionStyle.model_fields}
        if "style" in data and style:
            raise PydanticCustomError("subtitles_style_twice",
                                      "give the style keys either under 'style:' or beside 'mode:', not both")
        data.setdefault("style", style)
        return data
    raise PydanticCustomError("subtitles_form", "must be 'sidecar', 'burn' or a mapping with 'mode:' and style keys "
                              "(size, position, outline, margin, font, color, …)")


SubtitlesValue = Annotated[SubtitleOptions, BeforeValidator(subtitle_fields)]
"""The type of a ``subtitles:`` key in a pydantic model (a campaign file's)."""


def subtitle_problem(error: ErrorDetails) -> tuple[str, str]:
    """Where (``subtitles.size``) and what (``Input should be … (got 40)``) for one validation error of a
    ``SubtitlesValue`` (its location taken from the ``subtitles`` value: style keys read as if beside ``mode:``)."""
    where = ".".join(str(p) for p in ("subtitles", *(p for p in error["loc"] if p != "style")))
    value = error.get("input")
    got = f" (got {value!r})" if "input" in error and not isinstance(value, dict) else ""
    return where, f"{error['msg']}{got}"


def subtitle_options(value: Any, source: str) -> SubtitleOptions:
    """Parse a ``subtitles:`` value (see ``subtitle_fields``) given in ``source`` (a campaign file, an option).
    Raises ``SubtitleOptionsError`` naming ``source`` and the first problem, on one line."""
    try:
        return _SUBTITLES.validate_python(value)
    except ValidationError as error:
        problems: dict[str, str] = {}
        for detail in error.errors():
            where, what = subtitle_problem(detail)
            problems.setdefault(where, what)
        where, what = next(iter(problems.items()))
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise SubtitleOptionsError(f"{source}: {where}: {what}{more}") from None


_SUBTITLES: TypeAdapter[SubtitleOptions] = TypeAdapter(SubtitlesValue)


# ---------------------------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Where and how large captions are drawn in a ``width``×``height`` frame (pixels)."""

    side: str  # "bottom" or "top"
    font_px: int
    outline_px: float
    shadow_px: float
    margin_v: int  # from the frame's bottom (side bottom) or top edge to the text block
    margin_h: int
    lines: int  # most lines any cue has
    block: tuple[int, int, int, int]  # x0, y0, x1, y1: the largest caption's box
    mouth: tuple[int, int, int, int] | None  # the mouth zone kept clear, over the whole clip
    note: str  # why this side and size, when not the style's own

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def text_width(line: str, font_px: float) -> float:
    """Estimated width in pixels of one line drawn at ``font_px`` (an upper bound for ordinary text)."""
    return sum(WIDE_ADVANCE if is_wide(c) else NARROW_ADVANCE for c in line) * font_px


def mouth_zone(landmarks: np.ndarray, usable: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """The box the lips and chin sweep over the clip, grown by a tenth of the face height (x0, y0, x1, y1).

    ``landmarks``: (frames, 478, 3) in the output frame's pixels; ``usable``: frames whose landmarks are real.
    """
    if usable is not None:
        landmarks = landmarks[np.asarray(usable, bool)]
    if len(landmarks) == 0:
        return None
    points = landmarks[:, [*MOUTH, CHIN], :2]
    face = float(np.median(np.linalg.norm(landmarks[:, 10, :2] - landmarks[:, CHIN, :2], axis=-1)))
    pad = 0.1 * face
    x0, y0 = points[..., 0].min() - pad, points[..., 1].min() - pad
    x1, y1 = points[..., 0].max() + pad, points[..., 1].max() + pad
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int] | None) -> bool:
    return b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_captions(style: CaptionStyle, width: int, height: int, cues: list[Cue],
                   mouth: tuple[int, int, int, int] | None = None) -> Placement:
    """Side and font size for ``cues`` in a ``width``×``height`` frame: inside the frame, clear of ``mouth``.

    The font is the style's size, or smaller when the longest line would not fit the width. Tries the preferred
    side (``auto``: bottom), then the other, then both again with smaller fonts (``SHRINK_STEPS``, down to 55 %
    of the style's size); when nothing is clear, the side that covers the least of the mouth zone.
    """
    lines = [line for cue in cues for line in cue.text.split("\n")] or [""]
    n_lines = max((len(cue.text.split("\n")) for cue in cues), default=1)
    longest = max(text_width(line, 1.0) for line in lines) * (BOLD_WIDTH if style.bold else 1.0)
    margin_v = round(style.margin / 100 * height)
    margin_h = max(margin_v, round(0.03 * width))
    base = style.size / 100 * height
    full = min(base, (width - 2 * margin_h) / longest) if longest > 0 else base
    order = ["top", "bottom"] if style.position == "top" else ["bottom", "top"]

    def attempt(side: str, font: float) -> Placement:
        outline = style.outline / 100 * height * font / base
        shadow = style.shadow / 100 * height * font / base
        block_h = n_lines * LINE_HEIGHT * font + 2 * outline + shadow
        block_w = min(width - 2 * margin_h, longest * font + 2 * outline + shadow)
        x0 = round((width - block_w) / 2)
        y0 = round(height - margin_v - block_h) if side == "bottom" else margin_v
        return Placement(side, max(1, round(font)), round(outline, 2), round(shadow, 2), margin_v, margin_h,
                         n_lines, (x0, y0, round(x0 + block_w), round(y0 + block_h)), mouth, "")

    for scale in SHRINK_STEPS:
        font = min(full, base * scale)
        for side in order:
            placement = attempt(side, font)
            if not _overlaps(placement.block, mouth):
                notes = [f"on the {side}: on the {order[0]} they would cover the mouth"] if side != order[0] else []
                if font < full:
                    notes.append(f"font at {font / base:.0%} of the style's size, to stay clear of the mouth")
                elif full < base:
                    notes.append(f"font at {full / base:.0%} of the style's size, so the longest line fits")
                return replace(placement, note="; ".join(notes))
    candidates = [attempt(side, full) for side in order]
    assert mouth is not None  # without a mouth every placement is clear

    def covered(placement: Placement) -> int:
        return max(0, min(placement.block[3], mouth[3]) - max(placement.block[1], mouth[1]))

    return replace(min(candidates, key=covered),
                   note="no place is clear of the mouth in this framing: captions cover the least of it here")


# -------------------------------------------------------------------------------------------------- ASS


def _ass_colour(hex_colour: str, alpha: int = 0) -> str:
    red, green, blue = hex_colour[1:3], hex_colour[3:5], hex_colour[5:7]
    return f"&H{alpha:02X}{blue}{green}{red}".upper()


def _ass_time(seconds: float) -> str:
    cs = max(0, round(seconds * 100))
    hours, rest = divmod(cs, 360000)
    minutes, rest = divmod(rest, 6000)
    secs, cs = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{cs:02d}"


def _ass_text(text: str) -> str:
    # Braces open override blocks and a backslash starts a tag: show look-alikes instead. Lines join with \N.
    safe = text.replace("\\", "⧵").replace("{", "｛").replace("}", "｝")
    return r"\N".join(line.strip() for line in safe.split("\n"))


def to_ass(cues: list[Cue], style: CaptionStyle, placement: Placement, width: int, height: int) -> str:
    """An ASS script drawing ``cues`` as placed, in a ``width``×``height`` frame (PlayRes = the frame: pixels)."""
    alignment = 2 if placement.side == "bottom" else 8  # bottom centre / top centre
    border_style = 3 if style.box else 1
    back = _ass_colour(style.outline_color, 0 if style.box else 0x80)
    fields = [
        "Default", style.font.replace(",", " "), str(placement.font_px), _ass_colour(style.color),
        _ass_colour(style.color), _ass_colour(style.outline_color), back, "-1" if style.bold else "0", "0", "0", "0",
        "100", "100", "0", "0", str(border_style), f"{placement.outline_px:g}", f"{placement.shadow_px:g}",
        str(alignment), str(placement.margin_h), str(placement.margin_h), str(placement.margin_v), "1",
    ]
    events = [f"Dialogue: 0,{_ass_time(c.start)},{_ass_time(c.end)},Default,,0,0,0,,{_ass_text(c.text)}"
              for c in cues if c.end > c.start]
    return "\n".join([
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}",
        "WrapStyle: 0", "ScaledBorderAndShadow: yes", "YCbCr Matrix: TV.709", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
        "MarginR, MarginV, Encoding",
        "Style: " + ",".join(fields), "",
        "[Events]", "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
        *events, "",
    ])


def write_ass(dest: str | os.PathLike[str], cues: list[Cue], style: CaptionStyle, width: int, height: int,
              mouth: tuple[int, int, int, int] | None = None) -> Placement:
    """Place ``cues`` (``place_captions``) and write the ASS script to ``dest`` atomically; returns the placement."""
    placement = place_captions(style, width, height, cues, mouth)
    with atomic_output(Path(dest)) as tmp:
        tmp.write_text(to_ass(cues, style, placement, width, height), encoding="utf-8")
    return placement
