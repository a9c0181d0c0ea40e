#!/usr/bin/env bash
# A separate venv for the musicnn baseline of bench/bench_suite.py (musicnn 0.1.0 pins numpy<1.17 and uses
# tf.compat.v1.layers, so it cannot go into the project's .venv): TensorFlow 2.15 (Keras 2), numpy<2, librosa 0.10,
# musicnn installed --no-deps. Idempotent; ends with a smoke test of bench/musicnn_features.py on a bundled sample.
#   bench/musicnn_setup.sh [VENV_DIR]      (default ~/.cache/embedtool-musicnn/venv; $PYTHON: /usr/bin/python3.11)
# bench_suite finds VENV_DIR/bin/python by default (--musicnn-python or $EMBEDTOOL_MUSICNN_PYTHON otherwise).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$HOME/.cache/embedtool-musicnn/venv}
py=${PYTHON:-/usr/bin/python3.11}
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
"$venv/bin/python" -m pip install --quiet "tensorflow-cpu==2.15.1" "numpy==1.26.4" "librosa==0.10.2.post1" "soundfile>=0.12"
"$venv/bin/python" -m pip install --quiet --no-deps "musicnn==0.1.0"

# Smoke test, one thread and niced: a 1 s one-shot sound (zero-padded to musicnn's 3 s patch) -> one 200-d vector.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'track_id\tpath\nkick\t%s\n' "$here/../embedtool/sample_audio/sonicpi-cc0/kick/bd_boom.flac" >"$tmp/list.tsv"
TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 \
  nice -n 10 "$venv/bin/python" "$here/musicnn_features.py" "$tmp/list.tsv" "$tmp/out.npz"
"$venv/bin/python" -c "
import sys, numpy as np
v = np.load(sys.argv[1])['kick']
assert v.shape == (200,) and v.dtype == np.float32 and np.isfinite(v).all(), (v.shape, v.dtype)
" "$tmp/out.npz"
echo "musicnn venv ready: $venv/bin/python"
