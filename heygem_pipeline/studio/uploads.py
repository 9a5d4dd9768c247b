"""What the studio writes into the bucket: uploaded voices and presenters, typed texts, and its campaign files.

The rules a browser upload must follow before the factory sees it:
- only the extensions the factory accepts; a name made safe (no folders, no leading dot or dash, no control
  characters) so nothing can land outside ``scripts/``, ``avatars/`` or ``campaigns/``;
- visible only when complete: ``Bucket.upload`` writes a hidden temporary beside it and renames it;
- never a silent replacement of a file pairs already use: the same content is reused as it is, other content
  under a taken name gets a new name (``anna-2.mp4``) unless the user asked to replace it (its pairs re-render).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import yaml

from heygem_pipeline.engine.audio.intake import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from heygem_pipeline.engine.audio.voices.catalog import campaign_voice
from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, KokoroChoice, PiperChoice
from heygem_pipeline.engine.avatar import AVATAR_EXTENSIONS
from heygem_pipeline.errors import UnsupportedFormatError
from heygem_pipeline.factory.bucket import Bucket
from heygem_pipeline.factory.layout import AVATARS_PREFIX, CAMPAIGNS_PREFIX, SCRIPTS_PREFIX, TRANSCRIPTS_PREFIX
from heygem_pipeline.naming import stem_and_ext

MAX_NAME_LENGTH = 80
STUDIO_MARK = "made in the studio"  # a campaign file's description: the studio may rewrite only its own
# A voice is a sound file or a video whose audio is the voice; typed text is written as a .txt script.
VOICE_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
PRESENTER_EXTENSIONS = AVATAR_EXTENSIONS
QUALITY_CRF = {"high": 18, "standard": 23, "small": 28}
_UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class StoredUpload:
    """A file the studio put in (or found already in) the bucket."""

    name: str  # the file name in scripts/ or avatars/
    reused: bool  # the same content was there already under this name: nothing to redo


def safe_file_name(name: str, fallback: str = "upload") -> str:
    """A file name safe to put in a bucket folder: the last path component, letters (any script), digits,
    spaces, ``.``, ``-`` and ``_`` only, no leading dot or dash, at most ``MAX_NAME_LENGTH`` characters."""
    base = PurePosixPath(name.replace("\\", "/")).name
    stem, ext = stem_and_ext(unicodedata.normalize("NFC", base))
    stem = _UNSAFE.sub("_", stem).strip(" ._-") or fallback
    ext = re.sub(r"[^a-z0-9]", "", ext)
    stem = stem[: MAX_NAME_LENGTH - len(ext) - 1].rstrip(" ._-") or fallback
    return f"{stem}.{ext}" if ext else stem


def _digest(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _same_content(bucket: Bucket, rel: str, local: Path) -> bool:
    if bucket.size(rel) != local.stat().st_size:
        return False
    with bucket.fs.open(bucket.path(rel), "rb") as there, local.open("rb") as here:
        return _digest(there) == _digest(here)


def _free_name(bucket: Bucket, folder: str, name: str) -> str:
    stem, ext = stem_and_ext(name)
    taken = {PurePosixPath(e.rel).name.lower() for e in bucket.list_files(folder)}
    for number in range(2, 10_000):
        candidate = f"{stem}-{number}.{ext}" if ext else f"{stem}-{number}"
        if candidate.lower() not in taken:
            return candidate
    raise RuntimeError(f"{folder}/: no free name for {name}")


def store_upload(bucket: Bucket, kind: str, local: str | Path, original_name: str,
                 replace: bool = False) -> StoredUpload:
    """Put an uploaded file (``kind`` "script" or "avatar") into the bucket under a safe name.

    ``UnsupportedFormatError`` (one line naming the file) for an extension the factory does not take."""
    local = Path(local)
    allowed = VOICE_EXTENSIONS if kind == "script" else PRESENTER_EXTENSIONS
    name = safe_file_name(original_name, fallback="voice" if kind == "script" else "presenter")
    _, ext = stem_and_ext(name)
    if ext not in allowed:
        what = "voice" if kind == "script" else "presenter"
        raise UnsupportedFormatError(PurePosixPath(original_name).name or original_name,
                                     f"'.{ext}' is not a {what} format" if ext else "no file extension",
                                     f"upload one of {', '.join(sorted(allowed))}")
    folder = SCRIPTS_PREFIX if kind == "script" else AVATARS_PREFIX
    rel = f"{folder}/{name}"
    if bucket.exists(rel) and not replace:
        if _same_content(bucket, rel, local):
            return StoredUpload(name, reused=True)
        name = _free_name(bucket, folder, name)
        rel = f"{folder}/{name}"
    _put(bucket, local, rel)
    return StoredUpload(name, reused=False)


def _put(bucket: Bucket, local: Path, rel: str) -> None:
    """An upload into the bucket, atomically; a hard link on one local file system (a 1 GB video is not copied
    a second time: the browser's upload is already on disk, and the studio never writes to it again)."""
    if bucket.is_local:
        dest = bucket.local_path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temporary = dest.with_name(f".{dest.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            os.link(local, temporary)
        except OSError:
            bucket.upload(local, rel)
            return
        try:
            os.replace(temporary, dest)
        finally:
            temporary.unlink(missing_ok=True)
        return
    bucket.upload(local, rel)


def store_text(bucket: Bucket, text: str) -> StoredUpload:
    """A typed script as ``scripts/text-<digest>.txt`` (voiced offline by the factory): the same text is the
    same file, voiced once."""
    text = text.strip()
    if not text:
        raise ValueError("the text is empty: type what the presenter should say")
    name = f"text-{hashlib.sha256(text.encode()).hexdigest()[:10]}.txt"
    rel = f"{SCRIPTS_PREFIX}/{name}"
    if bucket.exists(rel):
        return StoredUpload(name, reused=True)
    bucket.write_bytes(rel, (text + "\n").encode())
    return StoredUpload(name, reused=False)


def store_transcript(bucket: Bucket, script_name: str, text: str) -> None:
    """What an audio script says, as ``transcripts/<its stem>.txt``: its captions are timed to it. The same text is
    left as it is (a changed transcript re-renders the script's pairs)."""
    text = text.strip()
    if not text:
        return
    rel = f"{TRANSCRIPTS_PREFIX}/{stem_and_ext(script_name)[0]}.txt"
    data = (text + "\n").encode()
    if not bucket.exists(rel) or bucket.read_bytes(rel) != data:
        bucket.write_bytes(rel, data)


@dataclass(frozen=True)
class StudioOptions:
    """What the page offers per request: the engine, the subtitles, the video quality, and the voice of its text
    scripts (None: the factory's default voice, and no ``voice:`` in the campaign file)."""

    engine: str = "viseme"
    subtitles: str = "sidecar"  # or "burn"
    quality: str = "high"  # QUALITY_CRF's keys
    voice: EspeakChoice | PiperChoice | KokoroChoice | None = None

    def campaign_fields(self) -> dict:
        fields = {"engine": self.engine, "subtitles": self.subtitles, "crf": QUALITY_CRF[self.quality]}
        voice = campaign_voice(self.voice)
        return fields if voice is None else {**fields, "voice": voice}


def write_campaign(bucket: Bucket, name: str, scripts: list[str], avatars: list[str],
                   options: StudioOptions) -> str:
    """``campaigns/<name>.yaml`` holding exactly these files; returns the campaign file's name. A campaign file
    the studio did not write is never changed: the batch then gets a new name."""
    base = safe_file_name(f"{name}.yaml", fallback=time.strftime("batch-%Y%m%d-%H%M%S"))
    stem, _ = stem_and_ext(base)
    file_name = f"{stem}.yaml"
    existing = bucket.read_bytes(f"{CAMPAIGNS_PREFIX}/{file_name}") if bucket.exists(
        f"{CAMPAIGNS_PREFIX}/{file_name}") else None
    if existing is not None and STUDIO_MARK not in existing.decode(errors="replace"):
        file_name = _free_name(bucket, CAMPAIGNS_PREFIX, file_name)
    # Exact names, escaped for fnmatch (a name with [ or * must match only itself).
    document = {"description": STUDIO_MARK, "scripts": [_literal(s) for s in scripts],
                "avatars": [_literal(a) for a in avatars], **options.campaign_fields()}
    bucket.write_bytes(f"{CAMPAIGNS_PREFIX}/{file_name}",
                       yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode())
    return file_name


def _literal(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def bucket_files(bucket: Bucket, kind: str) -> list[str]:
    """The voices or presenters already in the bucket, by file name (for the batch tab's pickers)."""
    folder = SCRIPTS_PREFIX if kind == "script" else AVATARS_PREFIX
    allowed = (VOICE_EXTENSIONS | {"txt"}) if kind == "script" else PRESENTER_EXTENSIONS
    return [PurePosixPath(e.rel).name for e in bucket.list_files(folder)
            if not PurePosixPath(e.rel).name.startswith(".") and stem_and_ext(e.rel)[1] in allowed]
