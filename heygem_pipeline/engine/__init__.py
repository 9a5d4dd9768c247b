"""The media engine: media in, lip-synced video out. No Dagster, no bucket, no environment reads.

Imports stay light here; each stage loads its heavy libraries (torch, MediaPipe) where it uses them.
"""
