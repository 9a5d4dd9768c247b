"""Script (voice track) intake and the audio features lip-sync engines consume.

A script arrives as an audio file, the audio track of a video, or plain text that espeak-ng voices offline.
Intake produces two things: a 16 kHz mono float32 ``analysis.wav`` every engine analyses, and a reference to
the best-quality audio for the final mux (the upload itself; for text, the espeak-ng wav). The Mel features
reproduce Wav2Lip's preprocessing exactly, because its weights give garbage on anything else
(see shared/reference/wav2lip/FACTS.md).

All ffmpeg/ffprobe calls go through ``heygem_pipeline.engine.media``; no Dagster here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile

from heygem_pipeline.engine.audio.features import ANALYSIS_RATE, DEFAULT_LANGUAGE
from heygem_pipeline.engine.audio.voices.choice import EspeakChoice, VoiceChoice, voice_text
from heygem_pipeline.engine.audio.voices.espeak import synthesize_speech as synthesize_speech  # its old home
from heygem_pipeline.engine.audio.voices.speech import VoicedSpeech
from heygem_pipeline.engine.captions.text import text_language
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.engine.media.probe import MediaInfo, probe
from heygem_pipeline.engine.media.tools import FFMPEG_GLOBAL_ARGS, PROGRESS_STDOUT, ff_path, require_tool, run_tool
from heygem_pipeline.errors import (
    EmptyFileError,
    NoAudioStreamError,
    NotMediaError,
    ToolFailedError,
    TooShortError,
    UnsupportedFormatError,
)
from heygem_pipeline.naming import safe_id, stem_and_ext
from heygem_pipeline.settings import DEFAULT_VOICE, ToolLimits

AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "m4a", "aac", "flac", "ogg", "opus"})
VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "mkv", "webm"})  # their audio track is the voice
TEXT_EXTENSIONS = frozenset({"txt"})  # voiced offline with espeak-ng
SCRIPT_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS | TEXT_EXTENSIONS
MIN_SCRIPT_SECONDS = 1.0
_SUPPORTED_HINT = "upload a " + "/".join(sorted(AUDIO_EXTENSIONS)) + " voice track, an " + "/".join(
    sorted(VIDEO_EXTENSIONS)) + " video with sound, or a .txt script"


def _decode(path: str | os.PathLike[str], info: MediaInfo | None = None, limits: ToolLimits | None = None
            ) -> tuple[np.ndarray, list[str], MediaInfo]:
    """Decode the first audio stream to 16 kHz mono float32; also return warnings about damage, and the probe."""
    path = Path(path)
    info = info or probe(path, limits=limits)  # EmptyFileError / NotMediaError
    if info.audio is None:
        if info.video is not None and (info.video.codec == "ansi" or info.format_name == "tty"):
            # ffprobe reads some plain-text files as ANSI art: that is text, not a video without sound.
            raise NotMediaError(path, "is a text file, not audio", _SUPPORTED_HINT)
        raise NoAudioStreamError(path, "has no audio stream", "upload a file with a voice track, or export the "
                                 "video again with its sound")
    require_tool("ffmpeg")
    args = (
        # ignore_err: a truncated or damaged upload still yields whatever frames decode cleanly.
        ffmpeg.input(ff_path(path), err_detect="ignore_err")["a:0"]
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=ANALYSIS_RATE)
        .global_args(*FFMPEG_GLOBAL_ARGS)
        .compile()
    )
    # Killed when no samples arrive for HEYGEM_STALL_SECONDS or it runs past the limit for the declared length.
    result = run_tool(args, subject=path, media_seconds=info.duration or info.audio.duration,
                      progress=PROGRESS_STDOUT, limits=limits)
    usable = len(result.stdout) - len(result.stdout) % 4
    samples = np.frombuffer(result.stdout[:usable], dtype="<f4").astype(np.float32)
    declared = info.audio.duration
    if declared and {"mov", "mp4"} & set(info.format_name.split(",")):
        # MP4/MOV declare the exact audio length (edit list), but ffmpeg 5.1 drops only the encoder priming,
        # not the padding that fills the last AAC frame (up to ~0.13 s of near-silence at 8 kHz). Cut it off
        # so the output frame count matches the real voice; larger gaps are left alone (not padding).
        exact = round(declared * ANALYSIS_RATE)
        if exact < samples.size <= exact + ANALYSIS_RATE // 2:
            samples = samples[:exact]
    stderr = result.stderr.decode(errors="replace").strip()
    tail = " | ".join(stderr.splitlines()[-3:])
    if samples.size == 0 and result.returncode != 0:
        failure = ToolFailedError("ffmpeg", path, result.returncode, tail, doing=f"decoding the audio of {path}")
        if failure.transient:
            raise failure  # the disk or the share failed, not the upload: a retry may decode it
        raise NotMediaError(path, f"its audio could not be decoded ({tail})", "export the voice track again"
                            ) from failure
    seconds = samples.size / ANALYSIS_RATE
    if seconds < MIN_SCRIPT_SECONDS:
        raise TooShortError(path, f"only {seconds:.2f} s of audio could be decoded (at least "
                            f"{MIN_SCRIPT_SECONDS:g} s is needed)",
                            "upload the complete file again (the upload may have been cut off) or a longer script")
    warnings: list[str] = []
    if result.returncode != 0 or stderr:
        warnings.append(f"the decoder reported errors (damaged or truncated upload?); used the {seconds:.2f} s that "
                        f"decoded: {tail}")
    expected = info.audio.duration or info.duration
    if expected and seconds < expected - max(0.25, 0.02 * expected):
        warnings.append(f"decoded {seconds:.2f} s but the file declares {expected:.2f} s: the upload looks truncated")
    return samples, warnings, info


def decode_audio(path: str | os.PathLike[str], info: MediaInfo | None = None, *,
                 limits: ToolLimits | None = None) -> np.ndarray:
    """The first audio stream of any media file as 16 kHz mono float32, silence kept (timing must match the source).

    ``info``: the file's probe, when the caller has it. Raises EmptyFileError, NotMediaError, NoAudioStreamError,
    or TooShortError (< 1 s decodable). ``limits``: of ffprobe and ffmpeg (default: from the environment).
    """
    return _decode(path, info, limits)[0]


def language_of_voice(voice: str) -> str:
    """The language code of an espeak-ng voice name (``en-us`` -> ``en``, ``cmn`` -> ``zh``)."""
    return EspeakChoice(speaker=voice).language()


def script_language(text: str, voice: VoiceChoice | None = None) -> str:
    """The language of a text script: ``zh`` when it is written mostly in Chinese characters, else the language
    the voice speaks (an espeak-ng voice's, a Piper voice's json, a Kokoro speaker's prefix; ``en`` without one)."""
    return text_language(text, voice.language() if voice is not None else DEFAULT_LANGUAGE)


@dataclass
class ScriptIntake:
    """What intake learned about one script; JSON-friendly through ``as_record``."""

    id: str
    upload: Path  # the file the user supplied (a .txt for text scripts)
    source: Path  # the audio to mux into the delivered video: the upload, or the espeak-ng wav for text
    analysis_wav: Path  # 16 kHz mono float32 WAV every engine analyses
    sample_rate: int  # of ``source``
    channels: int  # of ``source``
    codec: str  # of ``source``
    duration_s: float  # of the analysis audio, which sets the output frame count
    language: str
    text: str | None = None
    warnings: list[str] = field(default_factory=list)
    voice: str | None = None  # text scripts: the voice's variant (engine, model, speaker, speed)
    speech: VoicedSpeech | None = None  # text scripts: the voicing (phoneme timing, when the voice gives it)

    def as_record(self) -> dict[str, object]:
        record = dataclasses.asdict(dataclasses.replace(self, speech=None))
        del record["speech"]  # large, and only needed while the features are made
        record["voice_timing"] = self.speech is not None and self.speech.timing is not None
        for key in ("upload", "source", "analysis_wav"):
            record[key] = str(record[key])
        return record


def read_script_text(path: str | os.PathLike[str]) -> str:
    """The text of a .txt script (UTF-8, BOM tolerated), with typed errors for empty or non-text files."""
    path = Path(path)
    if not path.is_file():
        raise NotMediaError(path, "file does not exist", "check the path")
    raw = path.read_bytes()
    if not raw:
        raise EmptyFileError(path, "file is empty (0 bytes)", "upload it again")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotMediaError(path, "is not UTF-8 text", "save the script as UTF-8 plain text") from exc
    if "\x00" in text:
        raise NotMediaError(path, "is binary, not text", "save the script as UTF-8 plain text")
    if not text.strip():
        raise EmptyFileError(path, "text script has no words", "write the script text into the file")
    return text


def normalize_script(source: str | os.PathLike[str], workdir: str | os.PathLike[str], *,
                     voice: VoiceChoice | str = DEFAULT_VOICE, language: str | None = None,
                     limits: ToolLimits | None = None) -> ScriptIntake:
    """Check and normalize one script into ``workdir`` (``analysis.wav``; ``source.wav`` for text scripts).

    ``voice``: what speaks a text script (a choice, or an espeak-ng voice name). ``language``: stated, or for text
    detected (``script_language``), and ``DEFAULT_LANGUAGE`` for audio. ``limits``: of the tools (espeak-ng,
    ffprobe, ffmpeg; default: from the environment).
    """
    upload = Path(source)
    workdir = Path(workdir)
    script_id = safe_id(upload.name)  # UnsafeNameError for hidden or nameless files
    _, ext = stem_and_ext(upload.name)
    if ext not in SCRIPT_EXTENSIONS:
        raise UnsupportedFormatError(upload, f"'.{ext}' is not a supported script format" if ext else
                                     "has no file extension", _SUPPORTED_HINT)
    text: str | None = None
    mux_source = upload
    choice = EspeakChoice(speaker=voice) if isinstance(voice, str) else voice
    voiced = None
    if ext in TEXT_EXTENSIONS:
        text = read_script_text(upload)
        language = language or script_language(text, choice)
        voiced = voice_text(choice, text, workdir / "source.wav", language=language, subject=upload, limits=limits)
        mux_source = voiced.path
    language = language or DEFAULT_LANGUAGE

    samples, warnings, info = _decode(mux_source, limits=limits)
    assert info.audio is not None  # _decode raised otherwise
    if info.audio.sample_rate and info.audio.sample_rate < ANALYSIS_RATE:
        warnings.append(f"source sample rate is {info.audio.sample_rate} Hz, below {ANALYSIS_RATE} Hz: upsampled, "
                        "but consonant detail is lost and lip sync may be less precise; upload a 16 kHz+ recording")
    if float(np.max(np.abs(samples))) < 1e-4:
        warnings.append("the voice track is silent: the presenter's mouth will not move")

    analysis = workdir / "analysis.wav"
    with atomic_output(analysis) as tmp:
        soundfile.write(tmp, samples, ANALYSIS_RATE, subtype="FLOAT", format="WAV")
    return ScriptIntake(
        id=script_id,
        upload=upload,
        source=mux_source,
        analysis_wav=analysis,
        sample_rate=info.audio.sample_rate,
        channels=info.audio.channels,
        codec=info.audio.codec,
        duration_s=samples.size / ANALYSIS_RATE,
        language=language,
        text=text,
        warnings=warnings,
        voice=choice.variant if voiced is not None else None,
        speech=voiced,
    )


def load_analysis(path: str | os.PathLike[str]) -> np.ndarray:
    """Samples of an ``analysis.wav`` written by ``normalize_script`` (16 kHz mono float32)."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=False)
    if rate != ANALYSIS_RATE or samples.ndim != 1:
        raise ValueError(f"{path}: expected {ANALYSIS_RATE} Hz mono, got {rate} Hz with shape {samples.shape}")
    return samples
