#!/usr/bin/env bash
# The GPU rows of the accuracy protocol, as one command on a GPU machine with no network.
#
# Here, once:   python -m bench.gpu.pack            (.gpu/: 256-token articles + MiniLM-L6, about 62 MB)
# There:        OUT=<folder> bench/gpu/protocol.sh  (the device tool: carry [".gpu"], timeout_s 560)
# Back here:    python -m bench.quality.accuracy --rows ensemble --transformer-probs <the files that came back>
#
# Needs torch, transformers, pyarrow, scikit-learn and scipy there (not polars or prefect). Writes
# fold<k>.npz, folds.json and log.txt to $OUT; each fold's files are written when the fold ends, and
# no fold starts that would end after DEADLINE_S seconds (default 480) at the slowest fold's pace.
# Finish a stopped run later with: bench/gpu/protocol.sh --folds-to-run 3,4
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
cd "$(dirname "$0")/../.."
[ -f .gpu/pack.json ] || {
  echo "no .gpu/pack.json: run python -m bench.gpu.pack here first and carry .gpu" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 -m bench.gpu.transformer --pack .gpu --out "$OUT" \
  --deadline-s "${DEADLINE_S:-480}" "$@" 2>&1 | tee "$OUT/log.txt"
