#!/usr/bin/env bash
# Install the Debian tools the factory needs when they are missing: ffmpeg (media I/O), espeak-ng (offline
# voices for .txt scripts and the demo), fonts-noto-cjk (burnt-in captions: one face for Chinese and Latin),
# redis-server (the embedded Celery broker), and with --for-tests the browser the UI test drives and the PostgreSQL
# server of the scale-out test.
# Without root it stops and says exactly what to install.
set -u
need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || need+=(fonts-noto-cjk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${1:-}" = "--for-tests" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}   (then run make again)" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
"$here/quiet.sh" apt-get update -q || exit 1
"$here/quiet.sh" apt-get install -y -q --no-install-recommends "${need[@]}" || exit 1
