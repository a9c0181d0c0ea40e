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
# --- issue 33 (reliability, round 3): one row per class ---------------------------------------------------------
j() { $PY -c "import json,sys; d=sys.stdin.read(); r=json.loads(d[d.index('{'):]) if '{' in d else {}; print($1)" 2>&1; }
out=$($E -w /sys/embedtool-ws extract lib 2>&1); rc=$?; line "33 lock: workspace not writable" $rc "$(echo "$out" | tail -3)"
out=$( (ulimit -f 0; $E -q -w ws6 cluster 2>&1) ); rc=$?; line "33 lock: disk refuses writes" $rc "$(echo "$out" | tail -3)"
out=$($E -q -w ws6 index --kind ivf-pq 2>&1); rc=$?; line "33 index --kind ivf-pq, 6 tracks" $rc "$(echo "$out" | grep -i 'note' -A1)"
cp -r ws6 ws7; $PY -c "import json; p='ws7/classifier/meta.json'; m=json.load(open(p)); m['config']['cv']=1; json.dump(m,open(p,'w'))"
out=$($E -q -w ws7 verify --repair --json 2>/dev/null); rc=$?; line "33 classifier meta cv: 1, --repair" $rc "$(echo "$out" | j 'r.get("repaired")')"
printf 'train:\n  epochs:\n    - &a1 [x,x,x,x,x,x,x,x,x]\n' > embedtool.yaml
for i in 2 3 4 5 6 7 8 9; do printf "    - &a$i [%s]\n" "$(printf "*a$((i-1)),%.0s" 1 2 3 4 5 6 7 8 9 | sed 's/,$//')" >> embedtool.yaml; done
out=$($E config 2>&1); rc=$?; line "33 YAML bomb inside a section" $rc "$(echo "$out" | tail -2)"; rm embedtool.yaml
$PY - <<'PY'
import numpy as np, soundfile as sf, os, struct
sr = 22050; x = (0.3 * np.sin(np.arange(sr * 4) * 0.05)).astype(np.float32); os.makedirs("wavcut", exist_ok=True)
sf.write("w.wav", x, sr, subtype="PCM_16"); d = open("w.wav", "rb").read()
for f in (10, 50, 99): open(f"wavcut/cut{f}.wav", "wb").write(d[: len(d) * f // 100])
sf.write("wavcut/whole.wav", x, sr); h = bytearray(d[: sr * 2 + 44]); at = h.find(b"data"); struct.pack_into("<I", h, at + 4, sr * 2 * 3600); open("wavcut/liar.wav", "wb").write(h)
os.makedirs("nothing", exist_ok=True); open("nothing/x.wav", "wb").write(os.urandom(4000))
for s in ("x", "y"): os.makedirs(f"amb/{s}", exist_ok=True)
sf.write("amb/x/same.wav", x[:sr], sr); sf.write("amb/y/same.wav", x[sr : 2 * sr] * 0.5, sr)
PY
out=$($E -q -w ws8 extract wavcut --json 2>/dev/null); rc=$?; line "33 WAV cut at 10/50/99%, 1 h header" $rc "$(echo "$out" | j '[e["reason"] for e in r.get("errors", [])]')"
out=$($E -q -w ws9 extract nothing 2>&1); rc=$?; line "33 first extract, nothing usable" $rc "left: $(ls -d ws9 2>/dev/null || echo nothing)"
$E -q -w ws10 extract amb >/dev/null 2>&1; $E -q -w ws10 train --pretrained general >/dev/null 2>&1; $E -q -w ws10 index >/dev/null 2>&1
out=$($E -q -w ws10 neighbours same.wav 2>&1); rc=$?; line "33 two tracks end with same.wav" $rc "$(echo "$out" | tail -2)"
mkdir -p aaa && cp lib/a/* aaa/; out=$($E -q -w ws6 extract aaa --json 2>/dev/null); rc=$?
line "33 copy of a labelled folder" $rc "$(echo "$out" | j '"duplicates", len(r.get("duplicates", [])), "tracks", r.get("tracks")') labels: $($E -q -w ws6 info --json 2>/dev/null | j 'r.get("labels")' | cut -c1-60)"
$E -q -w ws5 extract --overwrite >/dev/null 2>&1; $E -q -w ws5 index >/dev/null 2>&1  # undo case 4
for case in garbage_features garbage_model n_mels victim; do rm -rf wsr; cp -r ws5 wsr
  $PY - "$case" <<'PY'
import json, sys
c = sys.argv[1]; f = "wsr/features/meta.json"
if c == "garbage_features": open(f, "w").write("garbage{")
elif c == "garbage_model": open("wsr/model/meta.json", "w").write("garbage{")
else:
    m = json.load(open(f))
    if c == "n_mels": m["config"]["n_mels"] = 128
    else: m["files"]["../../victim"] = {"size": 1, "blake2b": "0" * 32}
    json.dump(m, open(f, "w"))
PY
  out=$($E -q -w wsr verify --repair --json 2>/dev/null); rc=$?
  line "33 repair: $case" $rc "$(echo "$out" | j '[a["kind"] + ":" + a["status"] for a in r.get("artefacts", []) if a["status"] != "missing"]')"
done
echo precious > victim; rm -f ws6/logs/embedtool.log; ln -s "$W/victim" ws6/logs/embedtool.log; $E -q -w ws6 index >/dev/null 2>&1; rc=$?
line "33 logs/embedtool.log -> outside" $rc "victim now: $(cat victim)"
out=$($E -w nowhere neighbours x.wav --json 2>/dev/null); rc=$?; line "33 --json error (exit 4)" $rc "$out"
out=$($E neighbours --mode zz x.wav --json 2>/dev/null); rc=$?; line "33 --json usage error (exit 2)" $rc "$out"
out=$( (ulimit -v 4000000; $E -q -w ws6 neighbours lib/a/t1.wav 2>&1) ); rc=$?; line "33 neighbours under ulimit -v 4 GB" $rc "$(echo "$out" | tail -2)"
cp -r ws6 ws11; $PY -c "p='ws11/classifier/coef.npy'; d=bytearray(open(p,'rb').read()); d[-1]^=1; open(p,'wb').write(bytes(d))"
out=$($E -q -w ws11 classify lib/a/t1.wav 2>&1); rc=$?; line "33 one flipped byte in coef.npy" $rc "$(echo "$out" | tail -2)"
out=$($E -q -w ws12 extract cut 2>&1 >/dev/null); rc=$?; line "33 libmpg123 lines on stderr" $rc "$(echo "$out" | grep -c '^Warning\|^Note') stray; reason: $(grep -o 'decoder: [^]]*' ws12/features/errors.json | head -1 | cut -c1-60)"
$E -q -w ws13 extract lib >/dev/null 2>&1
$E -q -w ws13 train --init general --epochs 2 --steps-per-epoch 40 >/dev/null 2>&1 & pid=$!; sleep 20; kill -TERM $pid; wait $pid
out=$($E -q -w ws13 train --resume 2>&1 >/dev/null); rc=$?; line "33 train --init general, --resume" $rc "$(echo "$out" | grep -i "resuming\|error" | head -1)"
line "33 --help after boolean flags" 0 "<bool> shown $($E verify --help | grep -c '<bool>') times"
line "33 --threads" 0 "$($E train --help | grep -c -- '--threads') option(s); chosen: $($PY -c 'from embedtool.threads import CpuBudget; print(CpuBudget("x").look().describe())')"
