#!/usr/bin/env bash
# The aisfx baseline of bench/bench_suite.py (Ma & Lerch, ISMIR 2022; PyPI aisfx 0.1.2 ships its weights):
# installed into the project's .venv with --no-deps, because it pins librosa 0.9.2 and numpy 1.23 for a spectrogram
# that bench/aisfx_features.py computes with torch instead (its model is plain torch; its package imports tqdm).
# Idempotent; ends with a smoke test on a bundled sample.
#   bench/aisfx_setup.sh      (after ./dev test or ./dev demo made .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "no .venv: run ./dev test (or ./dev demo) first" >&2; exit 2; }
.venv/bin/python -m pip install --quiet --no-deps "aisfx==0.1.2"
.venv/bin/python -m pip install --quiet "tqdm>=4"
OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/aisfx_features.py embedtool/sample_audio/sonicpi-cc0/kick/bd_boom.flac
echo "aisfx ready in .venv"
