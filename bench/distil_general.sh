#!/usr/bin/env bash
# Distil the bundled aisfx network into a `general`-sized model trained on the general corpus (issue 30 item 2):
# the `distil` preset (the default triplet recipe plus a regression of each segment's descriptor onto aisfx's
# output of the same seconds), 20 epochs, seed 0, the same 46.6 h as the bundled model (bench/fetch_general.sh).
#
#   bench/distil_general.sh [WORK_DIR]        # default ~/.cache/embedtool-general2; never installs the model
#
# Every step resumes where a killed run stopped, so it can be run again and again across sessions:
#   - fetch and extract are incremental;
#   - the teacher pass saves its outputs every minute (WORK_DIR/ws-distil/teachers/aisfx/, ~100 s of CPU per audio
#     hour once);
#   - training continues from its last checkpoint (`train --resume`) when one is there.
# Loops run under `nice -n 19`: the machine's other work goes first.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$HOME/.cache/embedtool-general2}
embedtool=${EMBEDTOOL:-$repo/.venv/bin/embedtool}
nice -n 19 "$repo/bench/fetch_general.sh" "$work"
nice -n 19 "$embedtool" -w "$work/ws" extract "$work/audio" -j "$(nproc)"
ws=$work/ws-distil
mkdir -p "$ws"
[ -e "$ws/features" ] || ln -s "$work/ws/features" "$ws/features"  # one extraction for every recipe
resume=()
if [ -f "$ws/model.partial/checkpoint.json" ]; then resume=(--resume); fi
nice -n 19 "$embedtool" -w "$ws" train --preset distil --epochs 20 --seed 0 "${resume[@]}"
echo "distilled model in $ws/model; compare: ./dev bench bench_suite --set tuning --model $ws/model --tag distil"
