"""The voices a user can pick for text scripts: the built-in one and a voices folder's Piper voices and Kokoro
speakers, each with the campaign ``voice:`` it writes (stand-in models: no downloads)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime
import pytest
import yaml

from heygem_pipeline.engine.audio.voices.catalog import (
    BUILTIN,
    VOICES_DIR_VARIABLE,
    default_voices_folder,
    find_voice,
    voice_catalog,
)
from heygem_pipeline.engine.audio.voices.choice import KokoroChoice, PiperChoice
from heygem_pipeline.factory.campaigns import parse_campaign
from heygem_pipeline.factory.voicing import VoicePlan
from tests.helpers.voice_models import kokoro_standin, kokoro_voices, piper_standin


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "voices"
    piper_standin(root / "en" / "en_US-test-medium.onnx")
    piper_standin(root / "en_GB-other-low.onnx")
    kokoro_standin(root / "kokoro" / "kokoro-v1.0.onnx")
    kokoro_voices(root / "kokoro" / "voices-v1.0.bin", ("af_test", "zf_test"))
    piper_standin(root / "stray" / "no-json.onnx", with_json=False)  # neither Piper nor Kokoro: left out
    piper_standin(root / ".hidden" / "secret.onnx")  # hidden: left out
    return root


def test_only_the_built_in_voice_without_a_folder(tmp_path: Path) -> None:
    assert voice_catalog(None) == [BUILTIN]
    assert voice_catalog(tmp_path / "missing") == [BUILTIN]
    assert voice_catalog(tmp_path) == [BUILTIN]  # empty
    assert BUILTIN.campaign_voice() is None  # nothing written: the factory's default voice


def test_a_folder_lists_piper_voices_and_kokoro_speakers(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("listing the voices loaded an ONNX model")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_model)
    entries = voice_catalog(folder)
    assert [e.label for e in entries] == ["Default voice", "Piper · en_GB-other-low",
                                          "Piper · en_US-test-medium", "Kokoro · af_test", "Kokoro · zf_test"]
    assert [e.key for e in entries] == ["builtin", "piper:en_GB-other-low.onnx", "piper:en/en_US-test-medium.onnx",
                                        "kokoro:kokoro/kokoro-v1.0.onnx:kokoro/voices-v1.0.bin:af_test",
                                        "kokoro:kokoro/kokoro-v1.0.onnx:kokoro/voices-v1.0.bin:zf_test"]
    piper, kokoro = entries[2], entries[4]
    model = str((folder / "en" / "en_US-test-medium.onnx").resolve())
    assert piper.choice == PiperChoice(model=model)
    assert piper.campaign_voice() == {"engine": "piper", "model": model}
    assert kokoro.campaign_voice() == {"engine": "kokoro", "model": str((folder / "kokoro" / "kokoro-v1.0.onnx")
                                                                       .resolve()),
                                       "voices": str((folder / "kokoro" / "voices-v1.0.bin").resolve()),
                                       "speaker": "zf_test"}
    assert isinstance(kokoro.choice, KokoroChoice) and kokoro.choice.language() == "zh"
    # Keys are found again; a key not in the catalog is refused (a page cannot name a file of its own).
    assert find_voice(entries, kokoro.key) is kokoro
    assert find_voice(entries, "") is BUILTIN and find_voice(entries, None) is BUILTIN
    with pytest.raises(KeyError):
        find_voice(entries, "piper:../../elsewhere.onnx")


def test_each_entry_is_the_voice_its_campaign_reads(folder: Path) -> None:
    for entry in voice_catalog(folder)[1:]:
        text = yaml.safe_dump({"scripts": ["*.txt"], "voice": entry.campaign_voice()})
        campaign = parse_campaign(text, "studio.yaml")
        assert entry.choice is not None and campaign.voice == VoicePlan.single(entry.choice), entry.label


def test_two_kokoro_models_say_which_and_bad_voices_files_are_left_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "voices"
    kokoro_standin(root / "kokoro-v1.0.onnx")
    kokoro_standin(root / "kokoro-v1.0.int8.onnx")
    kokoro_voices(root / "voices-v1.0.bin", ("af_test",))
    (root / "voices-broken.bin").write_bytes(b"not a voices file")
    with caplog.at_level(logging.WARNING):
        labels = [e.label for e in voice_catalog(root)]
    assert labels == ["Default voice", "Kokoro · af_test (kokoro-v1.0.int8)", "Kokoro · af_test (kokoro-v1.0)"]
    assert "voices-broken.bin" in caplog.text and "is not a Kokoro voices file" in caplog.text


def test_the_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(VOICES_DIR_VARIABLE, str(tmp_path))
    assert default_voices_folder() == tmp_path
    monkeypatch.delenv(VOICES_DIR_VARIABLE)
    assert default_voices_folder() == Path("~/.local/share/heygem/voices").expanduser()
