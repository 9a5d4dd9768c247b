"""External tools (ffmpeg, ffprobe) under time limits, probing, frame streams, atomic files, previews."""
