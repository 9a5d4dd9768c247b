"""Wav2Lip: the generator network and its checkpoint loader (weights are supplied by the user, never downloaded)."""

from .checkpoint import (
    ENV_VAR,
    check_state_dict,
    expected_shapes,
    load_wav2lip_checkpoint,
    read_state_dict,
    resolve_checkpoint,
    save_wav2lip_checkpoint,
)
from .generator import IMG_SIZE, MEL_BINS, MEL_STEPS, Wav2Lip

__all__ = [
    "ENV_VAR",
    "IMG_SIZE",
    "MEL_BINS",
    "MEL_STEPS",
    "Wav2Lip",
    "check_state_dict",
    "expected_shapes",
    "load_wav2lip_checkpoint",
    "read_state_dict",
    "resolve_checkpoint",
    "save_wav2lip_checkpoint",
]
