"""The factory's stages as plain functions over local folders: the one code path behind the CLI and Dagster.

Each stage reads files from a folder and writes its outputs into one (atomically), with fixed names, so a
Dagster asset only has to move folders between the bucket and local disk and call one function:

- script folder:  ``source.mka`` (the voice as uploaded, for the final mux), ``analysis.wav`` (16 kHz mono),
  ``features.npz`` (Mel + mouth track), ``script.json`` (what intake found), ``captions.json`` (cues timed to
  the voice, when its text is known: a ``.txt`` script, or a transcript given for an audio script);
- avatar folder:  ``template.mp4`` (normalized), ``avatar.json``, ``face_track.parquet``, ``mouth_bank.npz`` (the
  template's own mouth interiors, built while tracking);
- a rendered pair: one MP4 (captions burnt in when asked), and ``write_subtitles`` puts its ``.srt`` and ``.vtt``
  beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np

from heygem_pipeline.engine.audio.features import (
    ANALYSIS_RATE,
    ScriptFeatures,
    load_features,
    save_features,
    script_features,
)
from heygem_pipeline.engine.audio.intake import load_analysis, normalize_script, read_script_text
from heygem_pipeline.engine.audio.visemes import mouth_track
from heygem_pipeline.engine.audio.visemes_ipa import mouth_track_from_phonemes
from heygem_pipeline.engine.audio.voices.choice import VoiceChoice
from heygem_pipeline.engine.audio.voices.speech import VoicedSpeech
from heygem_pipeline.engine.avatar import AvatarIntake, normalize_avatar
from heygem_pipeline.engine.captions.burnin import SubtitleOptions, mouth_zone, write_ass
from heygem_pipeline.engine.captions.cues import CaptionTrack, caption_speech, write_sidecars
from heygem_pipeline.engine.captions.voice_words import caption_voiced
from heygem_pipeline.engine.face.track import FaceTrack, ProgressCallback, track_faces
from heygem_pipeline.engine.folders import (
    AVATAR_BANK,
    AVATAR_RECORD,
    AVATAR_TEMPLATE,
    AVATAR_TRACK,
    NO_TRANSCRIPT,
    SCRIPT_ANALYSIS,
    SCRIPT_CAPTIONS,
    SCRIPT_FEATURES,
    SCRIPT_RECORD,
    SCRIPT_SOURCE,
)
from heygem_pipeline.engine.lipsync.base import LipSyncEngine
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.frames import EncodeSettings
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.engine.mouth.bank import BankBuilder, MouthBank, bank_from_video
from heygem_pipeline.engine.render import Progress, RenderResult, render_video
from heygem_pipeline.settings import DEFAULT_FPS, DEFAULT_STILL_SECONDS, DEFAULT_VOICE, ToolLimits


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def read_record(path: str | os.PathLike[str]) -> dict:
    return json.loads(Path(path).read_text())


def prepare_script(upload: str | os.PathLike[str], workdir: str | os.PathLike[str], *,
                   voice: VoiceChoice | str = DEFAULT_VOICE, transcript: str | os.PathLike[str] | None = None,
                   limits: ToolLimits | None = None) -> dict:
    """Intake + analysis + captions of one script into ``workdir``; returns the intake record (for metadata).

    ``transcript``: a UTF-8 text file with what an audio script says (ignored for ``.txt`` scripts, whose text
    is known); see ``caption_script``. ``limits``: of its tools (default: from the environment).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    intake = normalize_script(upload, workdir, voice=voice, limits=limits)
    # Keep the voice as uploaded (stream copy, no re-encode) so the delivered video has its original quality.
    with atomic_output(workdir / SCRIPT_SOURCE) as tmp:
        run_ffmpeg(ffmpeg.input(ff_path(intake.source)).output(ff_path(tmp), map="0:a:0", acodec="copy",
                                                                  format="matroska").overwrite_output(),
                   f"keeping the audio of {upload}", subject=upload, media_seconds=intake.duration_s,
                   limits=limits)
    samples = load_analysis(intake.analysis_wav)
    features = script_features(samples, language=intake.language, text=intake.text)
    speech = intake.speech
    if speech is not None and speech.timing:  # the voice said when each phoneme starts: the mouth follows that
        visemes = mouth_track_from_phonemes(speech.timing, intake.duration_s, samples, ANALYSIS_RATE)
    else:
        visemes = mouth_track(samples, features.sample_rate, intake.language)
    features = dataclasses.replace(features, visemes=visemes)
    save_features(workdir / SCRIPT_FEATURES, features)
    record = intake.as_record()
    record["mel_columns"] = int(features.mel.shape[1])
    record["captions"] = _caption(workdir, intake.text, transcript, intake.language, samples, speech, upload,
                                  limits)
    _write_json(workdir / SCRIPT_RECORD, record)
    return record


def caption_script(workdir: str | os.PathLike[str], transcript: str | os.PathLike[str] | None = None) -> dict:
    """(Re)write the captions of a prepared script (``captions.json``) and return their summary.

    The text is the script's own (``.txt`` scripts) or else ``transcript``'s; with neither, any earlier
    ``captions.json`` is removed and the summary's status is ``"no transcript"``. The summary is also stored in
    ``script.json`` under ``"captions"``. A transcript that is empty or not UTF-8 text raises an ``InputError``
    naming it.
    """
    workdir = Path(workdir)
    record = read_record(workdir / SCRIPT_RECORD)
    summary = _caption(workdir, record.get("text"), transcript, str(record.get("language") or "en"),
                       load_analysis(workdir / SCRIPT_ANALYSIS))
    _write_json(workdir / SCRIPT_RECORD, {**record, "captions": summary})
    return summary


def _caption(workdir: Path, text: str | None, transcript: str | os.PathLike[str] | None, language: str,
             samples: np.ndarray, speech: VoicedSpeech | None = None, subject: str | os.PathLike[str] = "script",
             limits: ToolLimits | None = None) -> dict:
    """``speech``: the voicing of a text script whose voice gave phoneme timing: words are timed by it (exact)
    instead of by aligning the audio."""
    source = "script text"
    if not text and transcript is not None:
        text, source = read_script_text(transcript), "transcript"
    path = workdir / SCRIPT_CAPTIONS
    if not text:
        path.unlink(missing_ok=True)
        return {"status": NO_TRANSCRIPT}
    if speech is not None and speech.timing and speech.espeak_voice and source == "script text":
        track = caption_voiced(text, speech.timing, len(samples) / ANALYSIS_RATE, language, source=source,
                               espeak_voice=speech.espeak_voice, sentences=speech.sentences or None,
                               subject=subject, limits=limits)
    else:
        track = caption_speech(text, samples, language, source=source, rate=ANALYSIS_RATE)
    track.save(path)
    return track.summary()


def load_captions(script_dir: str | os.PathLike[str]) -> CaptionTrack | None:
    """The captions of a prepared script, or None when it has none (an audio script without a transcript)."""
    path = Path(script_dir) / SCRIPT_CAPTIONS
    return CaptionTrack.load(path) if path.exists() else None


def write_subtitles(script_dir: str | os.PathLike[str], video: str | os.PathLike[str]) -> list[Path]:
    """``<video>.srt`` and ``<video>.vtt`` from the script's captions, beside ``video``; [] when it has none."""
    track = load_captions(script_dir)
    return list(write_sidecars(track, video)) if track is not None else []


def load_script(workdir: str | os.PathLike[str]) -> ScriptFeatures:
    return load_features(Path(workdir) / SCRIPT_FEATURES)


def prepare_avatar(upload: str | os.PathLike[str], workdir: str | os.PathLike[str], *, fps: float = DEFAULT_FPS,
                   still_seconds: float = DEFAULT_STILL_SECONDS, settings: EncodeSettings | None = None,
                   limits: ToolLimits | None = None) -> AvatarIntake:
    """Normalize one avatar into ``workdir/template.mp4``."""
    workdir = Path(workdir)
    intake = normalize_avatar(upload, workdir / AVATAR_TEMPLATE, fps=fps, still_seconds=still_seconds,
                              settings=settings or EncodeSettings(), limits=limits)
    _write_json(workdir / AVATAR_RECORD, intake.as_dict())
    return intake


def track_avatar(workdir: str | os.PathLike[str], progress: ProgressCallback | None = None, *,
                 limits: ToolLimits | None = None) -> FaceTrack:
    """Face track of ``workdir/template.mp4`` into ``workdir/face_track.parquet``, and its mouth bank into
    ``workdir/mouth_bank.npz`` (collected from the same decoded frames)."""
    workdir = Path(workdir)
    builder = BankBuilder()
    track = track_faces(workdir / AVATAR_TEMPLATE, progress=progress, on_face=builder.observe, limits=limits)
    builder.finish(track.landmarks, track.usable()).save(workdir / AVATAR_BANK)
    track.save(workdir / AVATAR_TRACK)
    return track


def load_mouth_bank(avatar_dir: str | os.PathLike[str], track: FaceTrack, limits: ToolLimits | None = None
                    ) -> MouthBank:
    """The avatar's mouth bank; built from its template now when it has none (a face track from before banks)."""
    avatar_dir = Path(avatar_dir)
    bank = MouthBank.load(avatar_dir / AVATAR_BANK) if (avatar_dir / AVATAR_BANK).exists() else None
    if bank is None:
        bank = bank_from_video(avatar_dir / AVATAR_TEMPLATE, track.landmarks, track.usable(), track.fps, limits)
    return bank


def render_pair(script_dir: str | os.PathLike[str], avatar_dir: str | os.PathLike[str],
                dest: str | os.PathLike[str], engine: LipSyncEngine, *, settings: EncodeSettings | None = None,
                progress: Progress | None = None, subtitles: SubtitleOptions | None = None,
                limits: ToolLimits | None = None) -> RenderResult:
    """Render one script × avatar pair from their prepared folders into ``dest``.

    ``subtitles`` with ``mode: burn``: the script's captions are burnt in (placed clear of the avatar's mouth);
    a script without captions renders without. Sidecars are ``write_subtitles``'s job. ``limits``: of the decoders
    and the encoder (default: from the environment).
    """
    script_dir, avatar_dir = Path(script_dir), Path(avatar_dir)
    track = FaceTrack.load(avatar_dir / AVATAR_TRACK)
    captions = load_captions(script_dir) if subtitles is not None and subtitles.burn else None
    mouths = load_mouth_bank(avatar_dir, track, limits) if engine.uses_mouth_bank else None
    with tempfile.TemporaryDirectory(prefix="heygem-subs-") as scratch:
        ass = None
        if captions is not None and captions.cues:
            assert subtitles is not None
            ass = Path(scratch) / "captions.ass"  # an intermediate of this render only
            write_ass(ass, captions.cues, subtitles.style, track.width, track.height,
                      mouth_zone(track.landmarks, track.usable()))
        return render_video(load_script(script_dir), script_dir / SCRIPT_SOURCE, avatar_dir / AVATAR_TEMPLATE,
                            track, engine, dest, settings=settings, progress=progress, subtitles=ass, mouths=mouths,
                            limits=limits)
