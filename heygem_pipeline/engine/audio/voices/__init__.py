"""Neural voices that turn a text script into speech offline, on onnxruntime (no GPL Python package).

``piper``: Piper voices (``.onnx`` + ``.onnx.json``), phonemes from the espeak-ng program (``espeak_ipa``).
``kokoro``: Kokoro v1.0 (``.onnx`` + its voices file), English phonemes from espeak-ng, Mandarin from misaki[zh].
Nothing here downloads anything: the user gives the voice files.
"""

from heygem_pipeline.engine.audio.voices.kokoro import KokoroVoice, load_kokoro_voice, voice_with_kokoro
from heygem_pipeline.engine.audio.voices.piper import PiperVoice, load_piper_voice, voice_with_piper
from heygem_pipeline.engine.audio.voices.speech import PhonemeTiming, VoicedSpeech

__all__ = ["KokoroVoice", "PhonemeTiming", "PiperVoice", "VoicedSpeech", "load_kokoro_voice", "load_piper_voice",
           "voice_with_kokoro", "voice_with_piper"]
