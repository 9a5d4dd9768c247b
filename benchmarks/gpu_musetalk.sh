#!/usr/bin/env bash
# MuseTalk 1.5 on one GPU (issue 21): fp32 and fp16, at 720p and 1080p, a 10 s clip (250 frames).
#
# Prints one JSON line per render on stdout (progress and errors go to stderr):
#   engine, precision, width, height, seconds, frames, device, gpu, load_s, render_s,
#   fps (end to end: decode → boxes → networks → paste → encode + mux), networks_fps (Whisper, VAE encode, UNet,
#   VAE decode and the face parser only, each CUDA-synchronised), network_s (their seconds), gpu_after_load_mb,
#   gpu_peak_mb (torch.cuda.max_memory_allocated over load and render), peak_rss_mb (the render process + ffmpeg).
#
# Expects, run from the repository root on a machine without network:
#   - a Python with the project and its dependencies installed, torch built with CUDA ($PYTHON; default
#     .venv/bin/python when there is one, else python3);
#   - ffmpeg and ffprobe on PATH; espeak-ng optional (without it the voice is a synthetic stand-in of the same
#     length: render speed does not depend on the words; the JSON says "voice");
#   - ~4 GB free under $HEYGEM_CACHE (default ~/.cache/heygem) for the stand-in weights, which it writes first
#     from the repository's manifest (20-40 s; reused when already there) — or MUSETALK_MODELS=DIR for real ones.
# Inputs are prepared once per resolution and shared by the fp32 and fp16 renders; each render is a fresh process.
# Budget: about 5 minutes on one H200 with 16 cores; each resolution is cut off after $LIMIT_S seconds (default 210).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SECONDS_CLIP=${SECONDS_CLIP:-10}
LIMIT_S=${LIMIT_S:-210}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; \
print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" >&2
if [ -z "${MUSETALK_MODELS:-}" ]; then
    started=$(date +%s)
    MUSETALK_MODELS=$("$PYTHON" -c "from tests.helpers.musetalk_fixture import standin_models; print(standin_models())")
    echo "stand-in weights: $MUSETALK_MODELS ($(( $(date +%s) - started )) s)" >&2
fi

status=0
for size in 1280x720 1920x1080; do
    echo "== ${size}, ${SECONDS_CLIP} s, fp32 and fp16" >&2
    timeout "$LIMIT_S" "$PYTHON" -m benchmarks.bench_musetalk --device cuda --engines musetalk \
        --precisions fp32,fp16 --seconds "$SECONDS_CLIP" --width "${size%x*}" --height "${size#*x}" \
        --models "$MUSETALK_MODELS" --jsonl || { status=$?; echo "${size}: failed or cut off (exit $status)" >&2; }
done
exit "$status"
