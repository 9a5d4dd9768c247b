"""File names inside a prepared script's and avatar's folder: the stages' contract with the bucket."""

from __future__ import annotations

SCRIPT_SOURCE = "source.mka"
SCRIPT_ANALYSIS = "analysis.wav"
SCRIPT_FEATURES = "features.npz"
SCRIPT_RECORD = "script.json"
SCRIPT_CAPTIONS = "captions.json"
NO_TRANSCRIPT = "no transcript"
AVATAR_TEMPLATE = "template.mp4"
AVATAR_RECORD = "avatar.json"
AVATAR_TRACK = "face_track.parquet"
AVATAR_BANK = "mouth_bank.npz"
