"""Neural voices that turn a text script into speech offline, on onnxruntime (no GPL Python package).

``piper``: Piper voices (``.onnx`` + ``.onnx.json``), phonemes from the espeak-ng program (``espeak_ipa``).
Nothing here downloads anything: the user gives the voice files.
"""

from heygem_pipeline.engine.audio.voices.piper import (
    PhonemeTiming,
    PiperVoice,
    VoicedSpeech,
    load_piper_voice,
    voice_with_piper,
)

__all__ = ["PhonemeTiming", "PiperVoice", "VoicedSpeech", "load_piper_voice", "voice_with_piper"]
