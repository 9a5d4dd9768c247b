"""The A/V sync check on real renders: in-sync videos pass (short, mostly silent and quiet ones included), a
shifted one fails, and a clip with too little speech says so instead of reporting a lag."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import soundfile as sf

from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.face.track import FaceTrack
from heygem_pipeline.engine.lipsync.registry import create_engine
from heygem_pipeline.engine.media.tools import ff_path, run_ffmpeg
from heygem_pipeline.engine.quality import SyncReport, measure_sync, speech_bursts, sync_verdict
from tests.helpers.avatar_factory import make_template_video
from tests.helpers.media_factory import make_speech

FPS = 25.0
LONG_TEXT = "Every script is analysed once, and every face is tracked once. Then each pair is rendered and checked."


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="module")
def avatar(work: Path) -> Path:
    stages.prepare_avatar(make_template_video(work / "presenter.mp4", seconds=2.0), work / "avatar", fps=FPS)
    stages.track_avatar(work / "avatar")
    return work / "avatar"


def _render(work: Path, avatar: Path, name: str, voice: np.ndarray, rate: int) -> Path:
    sf.write(work / f"{name}.wav", voice, rate)
    stages.prepare_script(work / f"{name}.wav", work / name)
    return stages.render_pair(work / name, avatar, work / f"{name}.mp4", create_engine("viseme")).path


def _speech(work: Path, name: str, text: str) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(make_speech(work / f"{name}_raw.wav", text), dtype="float32")
    return samples, rate


def _check(video: Path, avatar: Path) -> SyncReport:
    return measure_sync(video, face_track=FaceTrack.load(avatar / folders.AVATAR_TRACK))


def test_a_phrase_then_silence_is_not_enough_speech_and_passes_with_a_note(work: Path, avatar: Path) -> None:
    phrase, rate = _speech(work, "short", "Hello and welcome.")
    voice = np.concatenate([phrase, np.zeros(int(3.0 * rate) - len(phrase), np.float32)])  # 3 s, mostly silence
    report = _check(_render(work, avatar, "mostly_silent", voice, rate), avatar)
    verdict = sync_verdict(report)
    assert not report.measurable and report.speech_s < 2.0
    assert verdict.passed and "not enough speech to measure" in verdict.detail


@pytest.fixture(scope="module")
def speech_reports(work: Path, avatar: Path) -> dict[float, SyncReport]:
    """The same sentence at full level and 30 dB down (a quiet voice), each rendered and measured."""
    speech, rate = _speech(work, "long", LONG_TEXT)
    return {gain: _check(_render(work, avatar, f"speech_{gain:g}", speech * gain, rate), avatar)
            for gain in (1.0, 0.03)}


def test_in_sync_speech_passes_at_any_loudness(speech_reports: dict[float, SyncReport]) -> None:
    for gain, report in speech_reports.items():
        assert report.measurable, f"gain {gain}: {report.speech_s:.1f} s of speech in {report.speech_bursts} bursts"
        assert abs(report.offset_frames) <= 1 and report.confidence > 0.3, gain
        assert sync_verdict(report).passed


def test_a_quiet_voice_opens_the_mouth_as_far(speech_reports: dict[float, SyncReport]) -> None:
    def speaking(report: SyncReport) -> np.ndarray:
        return report.aperture[report.loudness_db > report.loudness_db.max() - 20]

    loud, quiet = (speaking(speech_reports[gain]) for gain in (1.0, 0.03))
    # Openings in face heights: natural speech stays within about 0.03-0.12, whatever the recording level.
    assert np.nanmedian(quiet) >= max(0.035, 0.85 * np.nanmedian(loud))
    assert np.nanpercentile(quiet, 95) < 0.13


def test_a_shifted_video_fails(work: Path, avatar: Path) -> None:
    speech, rate = _speech(work, "long", LONG_TEXT)
    rendered = work / "speech_1.mp4"
    if not rendered.exists():
        _render(work, avatar, "speech_1", speech, rate)
    # The voice 4 frames (160 ms) later than the picture: the mouth now moves before the sound.
    sf.write(work / "late.wav", np.concatenate([np.zeros(int(0.16 * rate), np.float32), speech]), rate)
    late = work / "audio_late.mp4"
    run_ffmpeg(ffmpeg.output(ffmpeg.input(ff_path(rendered)).video, ffmpeg.input(ff_path(work / "late.wav")).audio,
                             ff_path(late), vcodec="copy", acodec="aac").overwrite_output(), "muxing a late voice")
    report = _check(late, avatar)
    assert report.measurable
    assert report.offset_frames in (-5, -4, -3)
    assert not sync_verdict(report).passed


def test_speech_bursts_counts_syllables_and_words() -> None:
    silence = np.full(10, -80.0)
    syllable = np.array([-40, -25, -15, -12, -15, -25, -40], dtype=float)
    word = np.concatenate([syllable, syllable])  # two syllables with a 28 dB dip between them
    assert speech_bursts(np.concatenate([silence, word, silence, syllable, silence])) == 3
    assert speech_bursts(silence) == 0


def test_the_picture_is_measured_on_the_stretch_with_the_most_speech() -> None:
    from heygem_pipeline.engine.quality import sample_window

    speech = np.zeros(1000, bool)
    speech[100:150] = True
    speech[600:700] = True
    speech[750:800] = True
    assert sample_window(speech, 300) == slice(500, 800)  # the first stretch holding 150 speech frames
    assert sample_window(speech[:200], 300) == slice(0, 200)  # a short clip: all of it
