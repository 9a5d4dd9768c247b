"""Captions: forced alignment against espeak-ng's own word timing, cue building, SRT/WebVTT, script intake.

Speech comes from espeak-ng at test time; the reference timing comes from the same synthesis through
libespeak-ng's word events (``espeak_events``), which the engine itself never uses for captions.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from heygem_pipeline.engine import folders, stages
from heygem_pipeline.engine.audio.intake import decode_audio
from heygem_pipeline.engine.captions.align import METHOD_POCKETSPHINX, METHOD_VOICED, align_text, espeak_phones
from heygem_pipeline.engine.captions.cues import (
    MAX_CUE_SECONDS,
    MAX_LINE_WIDTH,
    CaptionTrack,
    Cue,
    build_cues,
    display_width,
    to_srt,
    to_webvtt,
    wrap_lines,
)
from heygem_pipeline.engine.captions.espeak_events import espeak_words, start_errors
from heygem_pipeline.engine.captions.text import Word, split_sentences
from heygem_pipeline.errors import EmptyFileError
from tests.helpers.media_factory import make_speech, make_tone

ENGLISH = ("Welcome to HeyGem, the factory for talking presenters. Before you start, check three things: is the "
           "cable plugged in? Is the green light on? Did you install version 2.4 of the Wav2Lip weights? If so, "
           "press the large button, wait thirty seconds, and enjoy the show.")
MANDARIN = ("大家好，欢迎来到我们的季度更新。这个季度，我们发布了新的入职流程。"
            "现在每位主持人都可以朗读每一份脚本。谢谢观看！")
GOAL_S = 0.150


def normalized(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def english_script(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("english")
    upload = folder / "welcome.txt"
    upload.write_text(ENGLISH, encoding="utf-8")
    record = stages.prepare_script(upload, folder / "work")
    return folder / "work", record


def test_reference_is_the_command_lines_synthesis(tmp_path: Path) -> None:
    # The reference must time the very samples a .txt script is voiced with.
    spoken = make_speech(tmp_path / "cli.wav", ENGLISH)
    cli, rate = sf.read(spoken, dtype="int16")
    synthesis = espeak_words(ENGLISH)
    assert rate == synthesis.rate
    assert np.array_equal(cli[: len(synthesis.samples)], synthesis.samples)
    assert not cli[len(synthesis.samples):].any()  # the command only adds silence at the end
    assert len(synthesis.words) >= 40 and ENGLISH[synthesis.words[0].char_start:].startswith("Welcome")


def test_english_cues_start_within_150_ms_of_their_words(english_script: tuple[Path, dict]) -> None:
    folder, record = english_script
    assert record["captions"]["status"] == "captioned"
    assert record["captions"]["method"] == METHOD_POCKETSPHINX and record["captions"]["source"] == "script text"
    track = CaptionTrack.load(folder / folders.SCRIPT_CAPTIONS)
    errors = start_errors(ENGLISH, [(c.text, c.start) for c in track.cues])
    measured = [abs(e) for e in errors if e is not None]
    assert len(measured) >= len(track.cues) - 1 >= 5
    assert max(measured) <= GOAL_S, measured
    words = [abs(e) for e in start_errors(ENGLISH, [(w.text, w.start) for w in track.words]) if e is not None]
    assert np.median(words) <= 0.05 and max(words) <= 0.2


def test_cues_say_the_whole_script_once_in_order(english_script: tuple[Path, dict]) -> None:
    folder, _ = english_script
    track = CaptionTrack.load(folder / folders.SCRIPT_CAPTIONS)
    assert normalized("".join(c.text for c in track.cues)) == normalized(ENGLISH)
    for cue, following in zip(track.cues, track.cues[1:], strict=False):
        assert cue.start < cue.end <= following.start
    assert track.cues[-1].end <= track.duration_s
    for cue in track.cues:
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(display_width(line) <= MAX_LINE_WIDTH for line in lines)
        assert cue.end - cue.start <= MAX_CUE_SECONDS + 0.5
    # Sentences end cues: no cue runs on from the end of one sentence into the next.
    assert all(not re.search(r"[.?!]\s+\S", cue.text.replace("2.4", "")) for cue in track.cues)


def test_words_missing_from_the_dictionary_get_espeak_pronunciations() -> None:
    assert espeak_phones("heygem") == "HH EY JH AH M"
    assert espeak_phones("2024").split()[:2] == ["T", "UW"]  # "two thousand twenty four"


def test_sidecars_srt_and_webvtt(english_script: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = english_script
    video = tmp_path / "out" / "welcome__anna.mp4"
    srt, vtt = stages.write_subtitles(folder, video)
    assert (srt.name, vtt.name) == ("welcome__anna.srt", "welcome__anna.vtt")
    track = CaptionTrack.load(folder / folders.SCRIPT_CAPTIONS)
    blocks = srt.read_text(encoding="utf-8").strip().split("\n\n")
    assert len(blocks) == len(track.cues)
    first = blocks[0].split("\n")
    assert first[0] == "1" and re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", first[1])
    webvtt = vtt.read_text(encoding="utf-8")
    assert webvtt.startswith("WEBVTT\n\n") and webvtt.count(" --> ") == len(track.cues)
    # ffmpeg reads both as subtitle streams with every cue
    for path in (srt, vtt):
        result = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets",
                                 "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
        assert int(result.stdout.strip()) == len(track.cues)


def test_subtitle_formats_escape_what_would_break_them() -> None:
    cues = [Cue(0.0, 1.5, "A -> B --> C\n<b>bold</b> & more"), Cue(61.25, 3723.5, "二行目")]
    assert to_srt(cues) == ("1\n00:00:00,000 --> 00:00:01,500\nA -> B -> C\n<b>bold</b> & more\n\n"
                            "2\n00:01:01,250 --> 01:02:03,500\n二行目\n")
    assert to_webvtt(cues) == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nA -> B -> C\n&lt;b>bold&lt;/b> &amp; more\n\n"
                               "00:01:01.250 --> 01:02:03.500\n二行目\n")
    assert to_srt([]) == "" and to_webvtt([]) == "WEBVTT\n\n"


def test_line_breaking() -> None:
    assert wrap_lines("Short line.") == ["Short line."]
    lines = wrap_lines("This quarter we shipped the new onboarding flow, and doubled the languages.")
    assert lines == ["This quarter we shipped the new onboarding", "flow, and doubled the languages."] or (
        lines is not None and len(lines) == 2 and all(display_width(x) <= 42 for x in lines))
    assert wrap_lines("word " * 30) is None  # more than two lines' worth
    chinese = wrap_lines("这个季度我们发布了新的入职流程并且支持的语言数量翻了一番")
    assert chinese is not None and len(chinese) == 2 and all(display_width(x) <= 42 for x in chinese)
    assert "".join(chinese) == "这个季度我们发布了新的入职流程并且支持的语言数量翻了一番"
    for width in range(16, 30):  # a line never starts with a comma or full stop
        lines = wrap_lines("你好，我们的节目今天开始了。欢迎大家来到这里，谢谢。", width)
        assert lines is None or not any(line.startswith(("，", "。")) for line in lines)


def test_long_and_slow_units_are_split() -> None:
    clause = Word("这个季度我们发布了新的入职流程并且支持的语言数量翻了一番"
                  "还缩短了发布一个培训视频所需要的时间从几天到几分钟", 2.0, 14.0)
    cues = build_cues([clause], duration=15.0)
    assert len(cues) >= 2 and normalized("".join(c.text for c in cues)) == normalized(clause.text)
    assert all(c.end - c.start <= MAX_CUE_SECONDS for c in cues)
    assert cues[0].start == 2.0 and cues[-1].end <= 15.0
    slow = build_cues([Word("一个很慢的句子。", 0.0, 16.0)], duration=16.0)
    assert len(slow) >= 3 and all(c.end - c.start <= MAX_CUE_SECONDS for c in slow)


def test_sentences() -> None:
    assert split_sentences("Hello there. Mr. Smith is here! Is it 2.4? Yes.\n\nNew") == [
        "Hello there.", "Mr. Smith is here!", "Is it 2.4?", "Yes.", "New"]
    assert split_sentences("你好。「欢迎！」他说。今天") == ["你好。", "「欢迎！」", "他说。", "今天"]


def test_mandarin_is_timed_sentence_by_sentence_to_the_voice(tmp_path: Path) -> None:
    upload = tmp_path / "hello.txt"
    upload.write_text(MANDARIN, encoding="utf-8")
    record = stages.prepare_script(upload, tmp_path / "work", voice="cmn")
    assert record["language"] == "zh" and record["captions"]["method"] == METHOD_VOICED
    track = CaptionTrack.load(tmp_path / "work" / folders.SCRIPT_CAPTIONS)
    assert normalized("".join(c.text for c in track.cues)) == normalized(MANDARIN)
    # Each cue starts on a sentence or clause: measured against espeak-ng's word events for that character.
    errors = [abs(e) for e in start_errors(MANDARIN, [(c.text, c.start) for c in track.cues], "cmn") if e is not None]
    assert len(errors) == len(track.cues) >= 4
    assert max(errors) <= GOAL_S, errors
    assert all("\n" not in c.text or max(display_width(x) for x in c.text.split("\n")) <= 42 for c in track.cues)


def test_audio_script_without_transcript_has_no_captions(tmp_path: Path) -> None:
    voice = make_speech(tmp_path / "voice.wav", "Every presenter can now speak every script.")
    work = tmp_path / "work"
    (work).mkdir()
    (work / folders.SCRIPT_CAPTIONS).write_text("{}")  # left from an earlier run with a transcript
    record = stages.prepare_script(voice, work)
    assert record["captions"] == {"status": folders.NO_TRANSCRIPT}
    assert not (work / folders.SCRIPT_CAPTIONS).exists()
    assert stages.load_captions(work) is None and stages.write_subtitles(work, tmp_path / "x.mp4") == []
    assert not (tmp_path / "x.srt").exists()


def test_audio_script_with_a_transcript(tmp_path: Path) -> None:
    text = "Every presenter can now speak every script. Thank you for watching."
    voice = make_speech(tmp_path / "voice.mp3", text)  # not a wav: decoded like any upload
    transcript = tmp_path / "transcripts" / "voice.txt"
    transcript.parent.mkdir()
    transcript.write_text(text + "\n", encoding="utf-8")
    record = stages.prepare_script(voice, tmp_path / "work", transcript=transcript)
    assert record["captions"]["source"] == "transcript" and record["captions"]["method"] == METHOD_POCKETSPHINX
    track = stages.load_captions(tmp_path / "work")
    assert track is not None and [c.text.replace("\n", " ") for c in track.cues] == [
        "Every presenter can now speak every script.", "Thank you for watching."]
    # The transcript can come later: captioning again alone updates the record.
    summary = stages.caption_script(tmp_path / "work")
    assert summary == {"status": folders.NO_TRANSCRIPT}
    assert stages.read_record(tmp_path / "work" / folders.SCRIPT_RECORD)["captions"] == summary


def test_an_empty_transcript_is_a_clear_error(tmp_path: Path) -> None:
    voice = make_speech(tmp_path / "voice.wav", "Hello there, how are you today?")
    transcript = tmp_path / "voice.txt"
    transcript.write_text("  \n")
    with pytest.raises(EmptyFileError, match=r"voice\.txt: text script has no words"):
        stages.prepare_script(voice, tmp_path / "work", transcript=transcript)


def test_speech_that_does_not_match_falls_back_to_sentence_timing(tmp_path: Path) -> None:
    # A tone is no speech: no word-level alignment is possible; captions are still timed to the "voice".
    samples = decode_audio(make_tone(tmp_path / "tone.wav", 3.0))
    samples[16000:24000] = 0.0  # a pause
    alignment = align_text("First sentence here. Second one.", samples, "en")
    assert alignment.method == METHOD_VOICED and alignment.warnings
    assert [w.text for w in alignment.words] == ["First sentence here.", "Second one."]
    assert alignment.words[0].end <= 1.05 and alignment.words[1].start >= 1.45
