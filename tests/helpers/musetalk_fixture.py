"""The MuseTalk 1.5 reference fixture (``tests/data/musetalk``: the reference code's outputs at every step, on
deterministic stand-in weights) and those weights, generated once per machine into a cache folder.

The weights are a pure function of the key/shape manifest (``musetalk_weights.py``, torch only): about 3.8 GB,
20-40 s to write. ``HEYGEM_CACHE`` (default ``~/.cache/heygem``) holds them; parallel test workers wait on a lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np

from tests.helpers.musetalk_weights import build_from_manifest

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "musetalk"
MANIFEST = FIXTURE / "weights_manifest.json"


def cache_dir() -> Path:
    return Path(os.environ.get("HEYGEM_CACHE", "~/.cache/heygem")).expanduser()


def standin_models() -> Path:
    """The stand-in weights in MuseTalk's README layout (``…/models``: musetalkV15/, sd-vae/, whisper/,
    face-parse-bisent/), written on first use and checked against the manifest's sha256."""
    root = cache_dir() / "musetalk-standin"
    complete = root / "complete"
    if complete.exists():
        return root / "models"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            build_from_manifest(str(root), str(MANIFEST))
            complete.touch()
    return root / "models"


def fixture(name: str) -> dict[str, np.ndarray]:
    """One of the fixture's arrays files (``audio``, ``latents``, ``unet``, ``blend``), loaded."""
    with np.load(FIXTURE / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}
