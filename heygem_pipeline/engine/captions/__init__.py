"""Captions: script text, forced alignment or voice timing, cues (SRT/WebVTT) and burnt-in subtitles."""
