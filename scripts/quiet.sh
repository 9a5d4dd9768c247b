#!/usr/bin/env bash
# Run a set-up command silently; if it fails, print the exact command and its output, then fail.
log=$(mktemp)
if "$@" >"$log" 2>&1; then
  rm -f "$log"
  exit 0
fi
status=$?
echo "set-up step failed (exit $status): $*" >&2
tail -n 40 "$log" >&2
rm -f "$log"
exit "$status"
