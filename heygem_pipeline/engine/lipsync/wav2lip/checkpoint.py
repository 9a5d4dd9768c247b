"""Find, read, check and write Wav2Lip generator checkpoints (``wav2lip.pth`` / ``wav2lip_gan.pth``).

The weights cannot be downloaded by this project, so the user points at their own file. Every problem with that
file becomes one ``CheckpointError`` line naming the file and the fix, raised before any rendering starts.

Files are read with ``torch.load(weights_only=True)``: the official checkpoints (a dict of ``state_dict``,
``optimizer``, ``global_step``, ``global_epoch``, saved in the legacy pre-1.6 format) hold only tensors, dicts,
lists and numbers, which the restricted unpickler accepts, so a user file cannot run code. Files that pickle other
Python objects need ``trust_pickle=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch

from heygem_pipeline.engine.lipsync.state_dicts import SHOW_KEYS, key_problems, with_batchnorm_counters
from heygem_pipeline.errors import CheckpointError
from heygem_pipeline.settings import WAV2LIP_CHECKPOINT_VAR, wav2lip_checkpoint_from_env

from .generator import Wav2Lip

ENV_VAR = WAV2LIP_CHECKPOINT_VAR
WHERE_TO_POINT = f"point env {ENV_VAR} or the campaign's `checkpoint:` at your wav2lip.pth / wav2lip_gan.pth"
_MODULE_PREFIX = "module."  # added by nn.DataParallel when the reference training saved its weights


def resolve_checkpoint(path: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint to use: ``path`` if given, else env ``HEYGEM_WAV2LIP_CHECKPOINT``; it must be a non-empty file.

    Call this before any work starts, so a bad setting fails the run at once instead of after decoding video.
    """
    raw = (os.fspath(path) if path is not None else wav2lip_checkpoint_from_env() or "").strip()
    if not raw:
        raise CheckpointError(
            "<wav2lip checkpoint>",
            f"no Wav2Lip checkpoint configured (no path given and env {ENV_VAR} is unset)",
            f"{WHERE_TO_POINT} (weights are never downloaded)",
        )
    resolved = Path(raw).expanduser()
    if not resolved.exists():
        raise CheckpointError(resolved, "checkpoint file not found", WHERE_TO_POINT)
    if resolved.is_dir():
        raise CheckpointError(resolved, "is a directory, not a checkpoint file", f"{WHERE_TO_POINT} (the .pth file)")
    if resolved.stat().st_size == 0:
        raise CheckpointError(resolved, "checkpoint file is empty (0 bytes)", f"download it again; {WHERE_TO_POINT}")
    return resolved


def read_state_dict(
    path: str | os.PathLike[str] | None = None, *, trust_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The generator weights in a checkpoint file, unwrapped from the official dict, without any ``module.`` prefix.

    Accepts the official layout (``{"state_dict": ..., "optimizer": ..., ...}``) or a bare state dict. Does not check
    the keys against the generator; ``load_wav2lip_checkpoint`` does.
    """
    resolved = resolve_checkpoint(path)
    obj = _torch_load(resolved, trust_pickle=trust_pickle)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            resolved,
            f"not a Wav2Lip checkpoint (holds {type(obj).__name__}, not a dict with `state_dict`)",
            WHERE_TO_POINT,
        )
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            resolved,
            f"not a Wav2Lip checkpoint: {len(bad)} entries are not named tensors (e.g. {', '.join(bad[:SHOW_KEYS])})",
            WHERE_TO_POINT,
        )
    return {_strip_prefix(k): v for k, v in state.items()}


def load_wav2lip_checkpoint(
    path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    trust_pickle: bool = False,
) -> Wav2Lip:
    """A ``Wav2Lip`` with the file's weights (``strict=True``), on ``device``, in eval mode.

    ``path`` falls back to env ``HEYGEM_WAV2LIP_CHECKPOINT``. Raises ``CheckpointError`` for a missing file, a file
    torch cannot read, or weights that are not the Wav2Lip generator's (names or shapes differ).
    """
    resolved = resolve_checkpoint(path)
    state = read_state_dict(resolved, trust_pickle=trust_pickle)
    state = check_state_dict(state, resolved)
    model = Wav2Lip()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # check_state_dict should have caught it; keep the one-line contract anyway
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(resolved, f"weights do not fit the Wav2Lip generator ({first})", WHERE_TO_POINT) from exc
    return model.to(device).eval()


def check_state_dict(state: Mapping[str, torch.Tensor], path: object = "<state dict>") -> dict[str, torch.Tensor]:
    """``state`` checked against the generator's names and shapes, ready for ``load_state_dict(strict=True)``.

    BatchNorm's ``num_batches_tracked`` counters carry no weights (they are unused in eval mode); when a converted
    file dropped them they are filled in with 0 rather than rejecting the file.
    """
    expected = expected_shapes()
    state = with_batchnorm_counters(state, expected)
    parts = key_problems(state, expected)
    if not parts:
        return state
    raise CheckpointError(
        path,
        f"not a Wav2Lip generator checkpoint{_guess_kind(state)}: {'; '.join(parts)}",
        f"{WHERE_TO_POINT} (not lipsync_expert.pth / visual_quality_disc.pth)",
    )


def save_wav2lip_checkpoint(
    model: Wav2Lip,
    path: str | os.PathLike[str],
    prefix_module: bool = False,
    *,
    global_step: int = 0,
    global_epoch: int = 0,
) -> Path:
    """Write ``model`` in the official layout (``state_dict``, ``optimizer=None``, ``global_step``, ``global_epoch``).

    ``prefix_module=True`` adds the ``module.`` prefix a DataParallel-trained file has. The file loads with
    ``weights_only=True`` in this project and in the reference ``inference.py``.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = _MODULE_PREFIX if prefix_module else ""
    state = {f"{prefix}{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {"state_dict": state, "optimizer": None, "global_step": int(global_step), "global_epoch": int(global_epoch)},
        out,
    )
    return out


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Name → shape of every generator state-dict entry, in order."""
    return dict(_expected_items())


@cache
def _expected_items() -> tuple[tuple[str, tuple[int, ...]], ...]:
    # Built on the meta device: names and shapes without allocating or initialising 36 M weights.
    with torch.device("meta"):
        model = Wav2Lip()
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _torch_load(path: Path, *, trust_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except PermissionError as exc:
        raise CheckpointError(
            path, "checkpoint file cannot be read (permission denied)", "fix its permissions"
        ) from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, IndexError... for bad files
        raise _load_failure(path, exc) from exc


def _load_failure(path: Path, exc: Exception) -> CheckpointError:
    """Turn torch.load's multi-paragraph exceptions into one line saying what is wrong with the file."""
    message = str(exc)
    if _looks_like_html(path):
        return CheckpointError(
            path,
            "is a web page, not a torch checkpoint (a download link that returned HTML, e.g. a Hugging Face "
            "/blob/ URL instead of /resolve/)",
            f"download the real file again; {WHERE_TO_POINT}",
        )
    if "Weights only load failed" in message and any(
        marker in message for marker in ("was not an allowed global", "is blocked", "must be")
    ):
        return CheckpointError(
            path,
            "checkpoint pickles Python objects besides tensors, so it was not loaded (it could run code)",
            "if you trust the file, load it once with trust_pickle=True and re-save it with save_wav2lip_checkpoint",
        )
    if "WeightsUnpickler error:" in message:  # keep torch's reason, drop its advice about weights_only
        message = message.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    reason = " ".join(message.split())[:160] or type(exc).__name__
    truncated = (
        isinstance(exc, EOFError)
        or any(m in message for m in ("central directory", "EOF", "corrupted"))
        or _head(path).startswith(_TORCH_MAGICS)  # starts like a torch file but cannot be read: cut short
    )
    problem = "checkpoint file is truncated or corrupt" if truncated else "not a torch checkpoint file"
    return CheckpointError(path, f"{problem} ({type(exc).__name__}: {reason})", WHERE_TO_POINT)


# Zip container (torch >= 1.6) or the legacy format's pickled magic number (protocol 2, 10-byte long).
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a")


def _head(path: Path, size: int = 512) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _looks_like_html(path: Path) -> bool:
    head = _head(path).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<!--", b"<head"))


def _strip_prefix(key: str) -> str:
    return key[len(_MODULE_PREFIX) :] if key.startswith(_MODULE_PREFIX) else key


def _guess_kind(state: Mapping[str, torch.Tensor]) -> str:
    """A hint for the most common mix-up: the SyncNet expert (its keys have ``face_encoder.``, not ``_blocks``)."""
    if any(k.startswith("face_encoder.") for k in state):
        return " (looks like the SyncNet expert discriminator, lipsync_expert.pth)"
    if any(k.startswith("face_encoder_blocks.") for k in state) and not any(
        k.startswith("audio_encoder.") for k in state
    ):
        return " (looks like the visual quality discriminator, visual_quality_disc.pth)"
    return ""
