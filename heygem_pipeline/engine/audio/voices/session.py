"""The onnxruntime session a voice runs in: CPU, quiet, and without memory patterns."""

from __future__ import annotations

from pathlib import Path

import onnxruntime

from heygem_pipeline.errors import VoiceModelError


def cpu_session(model: Path, fix: str, *, threads: int | None = None, edited: bytes | None = None
                ) -> onnxruntime.InferenceSession:
    """A CPU session of ``model`` (or of ``edited``, the model's bytes changed in memory); ``VoiceModelError``
    naming ``model`` with ``fix`` when onnxruntime cannot load it."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the graph optimizer's notes are not the user's business
    # A memory pattern is planned for every new chunk length, and the arena grows with them (Piper: 396 MB for a
    # 30 s script, 622 MB for 2 min); without patterns both peak at 396 MB, as fast (make bench). Without the arena
    # instead, Kokoro's peak triples.
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(edited if edited is not None else str(model), sess_options=options,
                                            providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types for unreadable models
        problem = " ".join(str(exc).split())[:200]
        raise VoiceModelError(model, f"is not an ONNX model onnxruntime can load ({problem})", fix) from exc
