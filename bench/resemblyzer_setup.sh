#!/usr/bin/env bash
# The Resemblyzer row of bench/bench_suite.py (Resemble AI's speaker encoder, PyPI Resemblyzer 0.1.4, Apache-2.0,
# weights inside the wheel): installed into the project's .venv with --no-deps, because its librosa/webrtcvad
# preprocessing is redone with torch by bench/resemblyzer_features.py. Idempotent; ends with a smoke test.
#   bench/resemblyzer_setup.sh      (after ./dev test or ./dev demo made .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "no .venv: run ./dev test (or ./dev demo) first" >&2; exit 2; }
.venv/bin/python -m pip install --quiet --no-deps "Resemblyzer==0.1.4"
OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/resemblyzer_features.py embedtool/sample_audio/sonicpi-cc0/kick/bd_boom.flac
echo "Resemblyzer ready in .venv"
