#!/usr/bin/env bash
# Re-make embedtool's bundled `general` model (embedtool/pretrained/general) from varied, freely licensed audio
# in Debian packages (3.4 h, 904 files): game sound effects and music, some speech, LMMS's instrument, drum
# and effect samples, desktop sounds. None of it is in the benchmark corpora (music-dev: the wesnoth,
# warzone2100 and hyperrogue *music* packages; drums: hydrogen-drumkits), so the benchmark measures the bundled
# model on audio it never heard.
#
#   bench/train_general.sh [WORK_DIR]        # default ~/.cache/embedtool-general; ~20 min on 2 cores
#
# Nothing is installed system-wide: each .deb is downloaded with `apt-get download` and unpacked with `dpkg -x`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$HOME/.cache/embedtool-general}
embedtool=${EMBEDTOOL:-$repo/.venv/bin/embedtool}
packages="lmms-common=1.2.2+dfsg1-6 sound-theme-freedesktop=0.8-2 frozen-bubble-data=2.212-11
  pingus-data=0.7.6-5.1 extremetuxracer-data=0.8.2-1 tuxpaint-data=1:0.9.28-sdl2-1 xmoto-data=0.6.1+repack-9
  supertux-data=0.6.3-2 wesnoth-1.16-data=1:1.16.9-1 freedroidrpg-data=1.0-1"
mkdir -p "$work/debs" "$work/pkgs" "$work/audio"
ls /var/lib/apt/lists/*Packages >/dev/null 2>&1 || apt-get update -qq
for spec in $packages; do
  name=${spec%%=*}
  ls "$work/debs/${name}"_*.deb >/dev/null 2>&1 || (cd "$work/debs" && apt-get download "$spec" 2>/dev/null)
  [ -d "$work/pkgs/$name/usr" ] || { mkdir -p "$work/pkgs/$name"; dpkg -x "$work/debs/${name}"_*.deb "$work/pkgs/$name"; }
done
# One flat folder of links; the names keep the package, so duplicates across packages stay apart.
for spec in $packages; do
  src=$work/pkgs/${spec%%=*}
  find "$src" -type f \( -iname '*.ogg' -o -iname '*.wav' -o -iname '*.flac' -o -iname '*.opus' \) | while read -r f; do
    rel=${f#"$src"/}; rel=${rel#usr/share/}
    ln -sf "$f" "$work/audio/$(basename "$src")__$(echo "$rel" | tr '/ ' '__')"
  done
done
"$embedtool" -w "$work/ws" extract "$work/audio" -j "$(nproc)"
"$embedtool" -w "$work/ws" train --preset default --epochs 20 --steps-per-epoch 200 --seed 0
out="$repo/embedtool/pretrained/general"
mkdir -p "$out"
cp "$work/ws/model/model.pt" "$work/ws/model/meta.json" "$out/"
echo "bundled model written to $out (CREDITS.md lists the sources)"
