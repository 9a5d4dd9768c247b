"""The demo bucket: scripts voiced offline by espeak-ng (with their transcripts, so the videos get subtitles) and
avatars made from a public-domain portrait.

Nothing is downloaded. The portrait is scikit-image's ``astronaut`` (a NASA photo in the public domain,
shipped inside the scikit-image wheel). Building is idempotent: existing files are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from heygem_pipeline.demo_media import write_still, write_template_video
from heygem_pipeline.engine.audio.intake import decode_audio, synthesize_speech
from heygem_pipeline.engine.media.files import atomic_output
from heygem_pipeline.factory.layout import TRANSCRIPTS_PREFIX
from heygem_pipeline.settings import DEFAULT_FPS, DEFAULT_VOICE

DEMO_BUCKET = Path("data/demo-bucket")

# (name, [sentences]): sentences of one script are joined by a pause of `pause_s`, so the second script
# exercises "mouth closed in the pauses".
DEMO_SCRIPTS: dict[str, list[str]] = {
    "welcome": ["Hello and welcome to the HeyGem content factory."],
    "pauses": [
        "Every script is analysed once.",
        "Every face is tracked once.",
        "Then each pair is rendered, checked, and delivered.",
    ],
}


@dataclass(frozen=True)
class DemoSize:
    width: int = 1280
    height: int = 720
    fps: float = DEFAULT_FPS
    template_seconds: float = 6.0
    pause_s: float = 0.8


def _voice_script(sentences: list[str], dest: Path, voice: str, pause_s: float) -> None:
    rate = 22050
    pieces: list[np.ndarray] = []
    for number, sentence in enumerate(sentences):
        part = dest.with_name(f".{dest.stem}.part{number}.wav")
        synthesize_speech(sentence, part, voice=voice)
        samples, rate = sf.read(part, dtype="float32")
        part.unlink()
        if pieces:
            pieces.append(np.zeros(int(pause_s * rate), dtype=np.float32))
        pieces.append(samples if samples.ndim == 1 else samples.mean(axis=1))
    with atomic_output(dest) as tmp:
        sf.write(tmp, np.concatenate(pieces), rate, format="WAV", subtype="PCM_16")


def build_demo_bucket(root: Path = DEMO_BUCKET, size: DemoSize | None = None, voice: str = DEFAULT_VOICE) -> Path:
    """Create (or complete) a demo bucket with 2 scripts (and their transcripts) and 2 avatars; return its root."""
    size = size or DemoSize()
    scripts, avatars = root / "scripts", root / "avatars"
    scripts.mkdir(parents=True, exist_ok=True)
    avatars.mkdir(parents=True, exist_ok=True)
    transcripts = root / TRANSCRIPTS_PREFIX
    transcripts.mkdir(parents=True, exist_ok=True)
    for name, sentences in DEMO_SCRIPTS.items():
        dest = scripts / f"{name}.wav"
        if not dest.exists():
            _voice_script(sentences, dest, voice, size.pause_s)
        text = transcripts / f"{name}.txt"
        if not text.exists():
            with atomic_output(text) as tmp:
                tmp.write_text(" ".join(sentences) + "\n", encoding="utf-8")
    template = avatars / "presenter.mp4"
    if not template.exists():
        write_template_video(template, size.template_seconds, width=size.width, height=size.height, fps=size.fps)
    still = avatars / "portrait.png"
    if not still.exists():
        write_still(still, width=size.width, height=size.height)
    return root


def describe_bucket(root: Path) -> list[str]:
    """One line per demo input: name and duration, for the CLI's output."""
    lines = []
    for path in sorted((root / "scripts").glob("*.wav")):
        lines.append(f"script  {path.name:<16} {len(decode_audio(path)) / 16000:5.1f} s")
    for path in sorted((root / "avatars").iterdir()):
        if not path.name.startswith("."):
            lines.append(f"avatar  {path.name:<16} {path.stat().st_size / 1e6:5.1f} MB")
    return lines
