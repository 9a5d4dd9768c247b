"""Faces: MediaPipe landmarks, the per-frame tracker, and the smoothed face track of an avatar."""
