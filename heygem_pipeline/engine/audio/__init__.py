"""Voices: script intake (decode, normalize, offline speech), Mel features, visemes and phonemes."""
