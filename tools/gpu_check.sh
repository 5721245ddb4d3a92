#!/usr/bin/env bash
# On a GPU host, one command (< 10 minutes): seed_cnn's images/s fed from
# memory vs fed by the pipeline (JPEG and raw records), mixed precision, XLA
# off and on; and the host's decode rate with all its cores. What it
# measures and its flags: tools/gpu_check.py. Anywhere, in seconds:
#   tools/gpu_check.sh --tiny
# PYTHON: the interpreter (default .venv/bin/python, else python3);
# GPU_CHECK_TIMEOUT: seconds before it is stopped (default 600).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
limit="${GPU_CHECK_TIMEOUT:-600}"
# SIGINT at the limit: the command stops as on Ctrl-C, with no traceback.
timeout --signal=INT --kill-after=30 "$limit" "$python" -m tools.gpu_check "$@"
status=$?
if [ "$status" -eq 124 ]; then
  echo "error: tools/gpu_check.sh stopped after ${limit} s (GPU_CHECK_TIMEOUT)" >&2
fi
exit "$status"
