#!/usr/bin/env bash
# Re-make embedtool's bundled `general` model (embedtool/pretrained/general) from freely licensed audio in
# Debian packages. It is a pair (see embedtool/model/encoder.py, "Companion"):
# - the model itself: 3.4 h, 904 files of varied audio — game sound effects and music, some speech, LMMS's
#   instrument, drum and effect samples, desktop sounds;
# - its companion: 4.2 h, 97 game-soundtrack tracks of four other games (Hedgewars, Widelands, SuperTuxKart,
#   LinCity-NG), whose window descriptors are appended to the model's for classify, cluster and evaluate.
# None of it is in the benchmark corpora (music-dev: the wesnoth, warzone2100 and hyperrogue *music* packages;
# drums: hydrogen-drumkits), so the benchmark measures the bundled model on audio it never heard.
#
#   bench/train_general.sh [WORK_DIR]        # default ~/.cache/embedtool-general; ~40 min on 2 cores
#
# Nothing is installed system-wide: each .deb is downloaded with `apt-get download` and unpacked with `dpkg -x`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$HOME/.cache/embedtool-general}
embedtool=${EMBEDTOOL:-$repo/.venv/bin/embedtool}
python=${PYTHON:-$repo/.venv/bin/python}
packages="lmms-common=1.2.2+dfsg1-6 sound-theme-freedesktop=0.8-2 frozen-bubble-data=2.212-11
  pingus-data=0.7.6-5.1 extremetuxracer-data=0.8.2-1 tuxpaint-data=1:0.9.28-sdl2-1 xmoto-data=0.6.1+repack-9
  supertux-data=0.6.3-2 wesnoth-1.16-data=1:1.16.9-1 freedroidrpg-data=1.0-1"
# the companion's soundtracks: package=version:music folder under usr/share/games
music="hedgewars-data=1.0.2-6:hedgewars/Data/Music widelands-data=2:1.1-3:widelands/data/music
  supertuxkart-data=1.4+dfsg-2:supertuxkart/data/music lincity-ng-data=2.9~git20150314-5:lincity-ng/music"
mkdir -p "$work/debs" "$work/pkgs" "$work/audio" "$work/audio_music2"
ls /var/lib/apt/lists/*Packages >/dev/null 2>&1 || apt-get update -qq
fetch() {  # fetch NAME=VERSION: download and unpack one package into $work/pkgs/NAME
  local spec=$1 name=${1%%=*}
  ls "$work/debs/${name}"_*.deb >/dev/null 2>&1 || (cd "$work/debs" && apt-get download "$spec" 2>/dev/null)
  [ -d "$work/pkgs/$name/usr" ] || { mkdir -p "$work/pkgs/$name"; dpkg -x "$work/debs/${name}"_*.deb "$work/pkgs/$name"; }
}
audio_files() { find "$1" -type f \( -iname '*.ogg' -o -iname '*.wav' -o -iname '*.flac' -o -iname '*.opus' \); }
# One flat folder of links per corpus; the names keep the package, so duplicates across packages stay apart.
for spec in $packages; do
  fetch "$spec"
  src=$work/pkgs/${spec%%=*}
  audio_files "$src" | while read -r f; do
    rel=${f#"$src"/}; rel=${rel#usr/share/}
    ln -sf "$f" "$work/audio/$(basename "$src")__$(echo "$rel" | tr '/ ' '__')"
  done
done
for item in $music; do
  spec=${item%:*}; name=${spec%%=*}
  fetch "$spec"
  audio_files "$work/pkgs/$name/usr/share/games/${item##*:}" | while read -r f; do
    ln -sf "$f" "$work/audio_music2/${name}__$(basename "$f")"
  done
done
"$embedtool" -w "$work/ws" extract "$work/audio" -j "$(nproc)"
"$embedtool" -w "$work/ws" train --preset default --epochs 20 --steps-per-epoch 200 --seed 0
"$embedtool" -w "$work/ws_m2" extract "$work/audio_music2" -j "$(nproc)"
"$embedtool" -w "$work/ws_m2" train --preset default --epochs 20 --steps-per-epoch 200 --seed 0
out="$repo/embedtool/pretrained/general"
rm -rf "$out/companion"
mkdir -p "$out"
cp "$work/ws/model/model.pt" "$work/ws/model/meta.json" "$out/"
"$python" -c 'import sys; from embedtool.model.store import attach_companion; attach_companion(*sys.argv[1:])' \
  "$out" "$work/ws_m2/model" "the default preset trained (20 x 200 steps, seed 0) on 4.2 h of game soundtracks: \
Hedgewars, Widelands, SuperTuxKart, LinCity-NG (bench/train_general.sh)"
echo "bundled model written to $out (CREDITS.md lists the sources)"
