#!/usr/bin/env bash
# The catalogue rows of issue 20 (nothing lost, nothing silent), one line each: exit status and the gist.
#   bench/fault_catalogue.sh [CODE_ROOT]   CODE_ROOT: a checkout of embedtool to run (default: this one), e.g. a
#   `git worktree add /tmp/before 3c0b3c7` to print the rows as they were before; runs in a fresh temp folder.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=${1:-$here}
E="$here/.venv/bin/python -m embedtool"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; cd "$W"
PY=$here/.venv/bin/python
$PY - <<'PY'
import numpy as np, soundfile as sf, os
sr=22050
def tone(p, f, s):
    os.makedirs(os.path.dirname(p), exist_ok=True); t=np.arange(int(sr*s))/sr; sf.write(p,(0.3*np.sin(2*np.pi*f*t)).astype(np.float32),sr)
for i in range(3): tone(f"lib/a/t{i}.wav", 200+50*i, 1.0); tone(f"lib/b/n{i}.wav", 900+70*i, 1.0)
tone("album/b/u.wav", 700, 1.0)
x=(0.3*np.random.default_rng(0).standard_normal(sr*6)).astype(np.float32)
os.makedirs("cut", exist_ok=True)
sf.write("cut/c.ogg", x, sr, format="OGG", subtype="VORBIS"); sf.write("cut/c.mp3", x, sr, format="MP3", subtype="MPEG_LAYER_III")
for p in ("cut/c.ogg","cut/c.mp3"):
    d=open(p,"rb").read(); open(p,"wb").write(d[:len(d)//2])
tone("cut/whole.wav", 440, 1.0); tone("odd/ok.wav", 330, 1.0); os.symlink("nowhere.wav","odd/gone.wav"); os.mkfifo("odd/pipe.wav")
os.mkfifo("fifo.wav"); open("bad.mp3","wb").write(os.urandom(3000))
PY
line() { printf "%-34s rc=%s  %s\n" "$1" "$2" "$(echo "$3" | tr '\n' ' ' | sed 's/  */ /g' | cut -c1-110)"; }
$E -q -w ws extract lib >/dev/null 2>&1
out=$($E -q -w ws extract album --json 2>&1); rc=$?; line "1 extract NEW_FOLDER" $rc "$(echo "$out" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("tracks",r["tracks"],"removed",r["removed"])' 2>&1)"
out=$($E -q -w ws2 extract cut --json 2>/dev/null); rc=$?; line "2 truncated ogg + mp3" $rc "$(echo "$out" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("tracks",r["tracks"],"failed",r["failed"],[e["reason"][:40] for e in r["errors"]])' 2>&1)"
out=$($E -q -w ws3 extract odd --json 2>&1); rc=$?; line "3 dangling symlink + FIFO in folder" $rc "$(echo "$out" | $PY -c 'import json,sys; r=json.load(sys.stdin); print("tracks",r["tracks"],"skipped",r["skipped"],[e["reason"][:30] for e in r["errors"]])' 2>&1)"
out=$($E -q -w ws4 extract fifo.wav 2>&1); rc=$?; line "3 FIFO given as PATH" $rc "$(echo "$out" | tail -2)"
$E -q -w ws5 extract lib >/dev/null 2>&1; $E -q -w ws5 train --pretrained general >/dev/null 2>&1; $E -q -w ws5 index >/dev/null 2>&1
$PY -c "import json; p='ws5/features/meta.json'; m=json.load(open(p)); m['config']['n_mels']=128; json.dump(m,open(p,'w'))"
out=$($E -q -w ws5 index 2>&1); rc=$?; line "4 n_mels edited: index" $rc "$(echo "$out" | tail -2)"
out=$($E -q -w ws5 neighbours lib/a/t1.wav --json 2>&1); rc=$?; line "4 n_mels edited: neighbours" $rc "$(echo "$out" | tail -2 | cut -c1-100)"
printf 'workspace: [a, b]\n' > embedtool.yaml; out=$($E info 2>&1); rc=$?; line "5 workspace: [a, b]" $rc "$(echo "$out" | tail -1)"
printf 'workspace: fifo.wav\n' > embedtool.yaml; touch afile; printf 'workspace: afile\n' > embedtool.yaml; out=$($E extract lib 2>&1); rc=$?; line "5 workspace is a file" $rc "$(echo "$out" | tail -1)"
printf 'workspace: x\n# \xff\n' > embedtool.yaml; out=$($E info 2>&1); rc=$?; line "5 non-UTF-8 embedtool.yaml" $rc "$(echo "$out" | tail -1)"
rm embedtool.yaml
$E -q -w ws6 extract lib >/dev/null 2>&1; $E -q -w ws6 train --pretrained general >/dev/null 2>&1; $E -q -w ws6 embed >/dev/null 2>&1; $E -q -w ws6 classify --cv 2 >/dev/null 2>&1
out=$($E -q -w ws6 classify lib/a/t1.wav bad.mp3 --json 2>&1); rc=$?; line "6 classify good.wav bad.mp3" $rc "$(echo "$out" | tail -3)"
