#!/usr/bin/env bash
# Fetch embedtool's "general2" training corpus: a large, varied set of freely licensed audio (game soundtracks
# and albums, sound effects, speech/voice recordings, instrument and drum samples, ambience) taken from Debian 12
# (bookworm) packages. It only downloads and lays out audio; it does not run embedtool or train anything.
#
#   bench/fetch_general.sh [WORK_DIR]      # default ~/.cache/embedtool-general2; PYTHON= a python with soundfile
#
# Idempotent: each PACKAGE=VERSION below is downloaded with `apt-get download` into WORK_DIR/debs (skipped when
# that version is already there) and unpacked with `dpkg -x` into WORK_DIR/pkgs/PACKAGE (skipped when already
# unpacked); nothing is installed system-wide. Audio members of .zip/.pk3 archives inside a package (0ad's
# public.zip, ...) are extracted next to the archive, into ARCHIVE.d/. Then, packages in the listed order:
#   - audio = regular files ending .ogg .oga .wav .flac .opus .mp3 .aif .aiff .au (or with no extension and an
#     Ogg/FLAC/WAVE signature, as in blobwars-data) that libsndfile (python
#     soundfile) opens, lasting >= 0.1 s; tracker modules, MIDI and soundfonts are never taken;
#   - duplicates (same sha1 of the first 1 MiB + same size) are kept once, the first package's copy;
#   - WORK_DIR/audio/PACKAGE__PATH: one relative symlink per kept file, PATH = its path in the package
#     without a leading usr/share/, with / -> __ and blanks -> _ ; stale links are removed;
#   - WORK_DIR/manifest.tsv: path (link name), package, version, kind (music|sfx|speech|instrument|ambience|
#     other, best effort from package and folder names), duration_s, licence (best effort, from the package's
#     usr/share/doc/PACKAGE/copyright);
#   - WORK_DIR/SUMMARY.md: per package and per kind, files and hours.
# Needs ~11 GB for debs + ~17 GB unpacked. Loops run under `nice -n 10`.
#
# EXCLUSIONS — these are in embedtool's evaluation suite, so nothing from these games or packages may be used
# (not even other packages of the same game); the script refuses to run if the list below names one:
#   wesnoth (all wesnoth-*), warzone2100 (all), hyperrogue (all), hydrogen / hydrogen-drumkits, drascula (all),
#   hedgewars (all), supertux (all supertux-*; supertuxkart is a different game and allowed), extremetuxracer
#   (all), xmoto (all), lincity-ng (all), boswars (all), asterisk-core-sounds-* (all asterisk sounds), freepats.
#   Nothing under /work/shared is used either.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$HOME/.cache/embedtool-general2}
python=${PYTHON:-$repo/.venv/bin/python}
# package=version, in processing order (the first copy of a duplicated file wins)
packages="
  0ad-data=0.0.26-1 7kaa-data=2.15.5+dfsg-1 abe-data=1.1+dfsg-5 aisleriot=1:3.22.23-1 ardentryst=1.71-9
  asc-music=1.3-6 atanks-data=6.6~dfsg-1 berusky2-data=0.12-2 blinken=4:22.12.3-1 blobwars-data=2.00-2
  bomberclone-data=0.11.9-7.1 brainparty-data=0.61+dfsg-7 btanks-data=0.9.8083-9 caveexpress-data=2.5.2-1
  ceferino-data=0.97.8+svn37-2.2 chromium-bsu-data=0.9.16.1-3 colobot-common-sounds=0.2.0-2 cube2-data=1.3-1
  davegnukem-data=1.0.3-4 deepin-sound-theme=15.10.6-1 dreamchess-data=0.3.0-2 eiskaltdcpp-sounds=2.4.2-1
  emacspeak=53.0+dfsg-2 endless-sky-data=0.9.8-1.2 enigma-data=1.20-dfsg.1-2.2 exadrums=0.7.0-1
  festvox-ru=0.5+dfsg-6 fillets-ng-data-cs=1.0.1-1.1 fillets-ng-data-nl=1.0.1-1.1 fillets-ng-data=1.0.1-1.1
  flare-game=1.14-1 flobopuyo=0.20-5.1 freeciv-data=3.0.6-1+deb12u1 freecol=1.0.0-1 freedroidrpg-data=1.0-1
  freeorion-data=0.4.10.2-1 fretsonfire-songs-muldjord=2.dfsg-2.1 fretsonfire-songs-sectoid=1.dfsg-3.1
  frozen-bubble-data=2.212-11 funnyboat=1.5-11 gajim=1.7.3-2 gcin-voice=0~20170223-3 gigalomania-data=1.0+ds1-1.1
  gnome-nibbles=1:3.38.2-2+b1 granatier=4:22.12.3-1 gunroar-data=0.15.dfsg1-10 hannah-data=1.0-3.3
  heroes-sound-effects=1.0-6 holotz-castle-data=1.3.14-12 iagno=1:3.38.1-2 instead-data=3.3.2-1.1
  kajongg=4:22.12.3-1 kanagram=4:22.12.3-1 kapman=4:22.12.3-1 kblocks=4:22.12.3-1 kbounce=4:22.12.3-1
  kdiamond=4:22.12.3-1 kgoldrunner=4:22.12.3-1 khangman=4:22.12.3-1 klettres-data=4:22.12.3-1
  knavalbattle=4:22.12.3-1 kolf=4:22.12.3-1 ksirk=4:22.12.3-1 ktuberling-data=4:22.12.3-1 lightyears=1.5.0-2
  linphone-common=5.1.65-4 lmms-common=1.2.2+dfsg1-6 lomiri-sounds=22.02-1 lordsawar-data=0.3.2+frogknows-1
  lugaru-data=1.2-6 marsshooter-data=0.7.6-7 megaglest-data=3.13.0-3 minetest-data=5.6.1+dfsg+~1.9.0mt8+dfsg-2
  mirrormagic-data=3.1.0+dfsg1-1 mu-cade-data=0.11.dfsg1-13 naev-data=0.8.2-1 neverball-common=1.6.0+git20180603-3
  nexuiz-music=2.5.2-12 njam-data=1.25-12 open-invaders-data=0.3-8 openarena-088-data=0.8.8-12
  openarena-data=0.8.5split-14 opencity-data=0.0.6.5stable-5 openclonk-data=8.1-3 oxygen-sounds=4:5.27.5-2
  pangzero=1.4.1+git20121103-6 parsec47-data=0.2.dfsg1-9 pathological=1.1.3-17 performous=1.1+git20181118-6
  pidgin-data=2.14.12-1 pinball-data=0.3.20201218-4 pingus-data=0.7.6-5.1 planetblupi-music-ogg=1.14.2-3
  plee-the-bear-data=0.6.0-8 pokerth-data=1.1.2-2 powermanga-data=0.93.1-5 psi-plus-sounds=1.4.554-5
  pushover-data=0.0.5+git20180909-4 pysiogame=4.20.01-1 qabcs-data=1.0.2-6 quadrapassel=1:40.2-1
  redeclipse-data=1.6.0-1 renpy-demo=8.0.3+dfsg-1 ri-li-data=2.0.1+ds2-2 rrootage-data=0.23a-13
  scorched3d-data=44+dfsg-8 seahorse-adventures=1.1+dfsg-6 searchandrescue-data=1.3.0-1.1 simutrans-pak64=121.0-1
  singularity-music=007-2 slimevolley-data=2.4.2+dfsg-3 solarwolf=1.5+dfsg1-6 sonic-pi-samples=3.2.2~repack-8
  sound-icons=0.1-8 sound-theme-freedesktop=0.8-2 starfighter-data=2.4-1 sugar-memorize-activity=58-3
  supertuxkart-data=1.4+dfsg-2 titanion-data=0.3.dfsg1-8 torcs-data=1.3.7+dfsg-5 torus-trooper-data=0.22.dfsg1-13
  trackballs-data=1.3.4-1 trigger-rally-data=0.6.6.1-3 tumiki-fighters-data=0.2.dfsg1-10 tuxfootball=0.3.1-7
  tuxpaint-data=1:0.9.28-sdl2-1 tuxpaint-stamps-default=2022.06.04-1 tuxtype-data=1.8.3-5.1 ufoai-music=2.5-2
  ufoai-sound=2.5-2 unknown-horizons=2019.1-6 val-and-rick-data=0.1a.dfsg1-7 warmux-data=1:11.04.1+repack2-4
  widelands-data=2:1.1-3 yaru-theme-sound=22.10.3-1 zaz-data=1.0.1-1
"
exclude='^(wesnoth|warzone2100|hyperrogue|hydrogen|drascula|hedgewars|supertux($|-)|extremetuxracer|xmoto|lincity|boswars|asterisk|freepats)'
for spec in $packages; do
  if [[ ${spec%%=*} =~ $exclude ]]; then echo "refusing: ${spec%%=*} is on the exclusion list" >&2; exit 1; fi
done
mkdir -p "$work/debs" "$work/pkgs" "$work/audio"
ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1 || apt-get update -qq
for spec in $packages; do
  name=${spec%%=*} version=${spec#*=}
  deb=""
  for f in "$work/debs/${name}"_*.deb; do
    [ -e "$f" ] && [ "$(dpkg-deb -f "$f" Package)" = "$name" ] && [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && deb=$f
  done
  if [ -z "$deb" ]; then
    (cd "$work/debs" && apt-get download -q "$spec" 2>&1 | grep -v unsandboxed || true)
    for f in "$work/debs/${name}"_*.deb; do
      [ -e "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && deb=$f
    done
    [ -n "$deb" ] || { echo "could not download $spec" >&2; exit 1; }
  fi
  dest=$work/pkgs/$name
  if [ "$(cat "$dest/.version" 2>/dev/null)" != "$version" ]; then
    rm -rf "$dest"; mkdir -p "$dest"
    nice -n 10 dpkg -x "$deb" "$dest"
    echo "$version" > "$dest/.version"
    echo "unpacked $spec"
  fi
done
nice -n 10 "$python" - "$work" $packages <<'PY'
"""Scan unpacked Debian packages for decodable audio; build audio/ links, manifest.tsv and SUMMARY.md.

argv: WORK_DIR PACKAGE=VERSION...   (packages are processed in the given order; the first copy of a
duplicated file wins). Deterministic: same packages -> same links, manifest and summary.
"""
import hashlib
import os
import re
import sys
import zipfile

import soundfile as sf

AUDIO_EXT = (".ogg", ".oga", ".wav", ".flac", ".opus", ".mp3", ".aif", ".aiff", ".au")
ARCHIVE_EXT = (".zip", ".pk3")
MIN_DUR = 0.1
FONTISH = re.compile(r"font|OFL|Bitstream|Arev|Gust|DejaVu|Liberation|Ubuntu-Font", re.I)
EXCLUDE = re.compile(r"^(wesnoth|warzone2100|hyperrogue|hydrogen|drascula|hedgewars|supertux($|-)|"
                     r"extremetuxracer|xmoto|lincity|boswars|asterisk|freepats)")

# package -> kind for every file (packages that hold a single kind of audio)
PKG_KIND = {
    "nexuiz-music": "music", "ufoai-music": "music", "singularity-music": "music",
    "planetblupi-music-ogg": "music", "fretsonfire-songs-sectoid": "music",
    "fretsonfire-songs-muldjord": "music", "fb-music-high": "music", "asc-music": "music",
    "xblast-tnt-musics": "music", "openttd-openmsx": "music", "heroes-sound-tracks": "music",
    "fillets-ng-data-cs": "speech", "fillets-ng-data-nl": "speech", "gcin-voice": "speech",
    "klettres-data": "speech", "artikulate": "speech", "svxlink-server": "speech", "festvox-ru": "speech",
    "grandorgue-demo": "instrument", "exadrums": "instrument",
    "sound-theme-freedesktop": "sfx", "oxygen-sounds": "sfx", "deepin-sound-theme": "sfx",
    "lomiri-sounds": "sfx", "yaru-theme-sound": "sfx", "sound-icons": "sfx", "pidgin-data": "sfx",
    "gajim": "sfx", "linphone-common": "sfx", "emacspeak": "sfx", "openttd-opensfx": "sfx",
    "ufoai-sound": "sfx", "heroes-sound-effects": "sfx", "psi-plus-sounds": "sfx",
    "eiskaltdcpp-sounds": "sfx",
}
# (package regex, path regex, kind): first match wins, checked before the generic path rules
PKG_PATH_KIND = [
    (r"^tuxpaint-stamps", r"_desc[^/]*$", "speech"),
    (r"^qabcs", r"/sounds/(words|alpha|letters)", "speech"),
    (r"^ktuberling", r"/sounds/[a-z_@]+/", "speech"),
    (r"^kajongg", r"/voices/", "speech"),
    (r"^gcompris", r"/voices", "speech"),
    (r"^fillets-ng-data$", r"/sound/", "speech"),
    (r"^tuxtype", r"/words/|/sounds/[a-z][a-z]_", "speech"),
    (r"^sonic-pi-samples", r"/ambi_", "ambience"),
    (r"^sonic-pi-samples", r"/(drum|bd|sn|elec|perc|tabla|bass|guit|mehackit)_", "instrument"),
    (r"^sonic-pi-samples", r"/loop_", "music"),
    (r"^lmms-common", r"/(drums|instruments|basses|stringsnpads|bassloops|beats|latin|misc)/", "instrument"),
    (r"^lmms-common", r"/effects/", "sfx"),
    (r"^mixxx", r".", "other"),
]
PATH_KIND = [
    (r"voice|speech|spoken|dialog|narrat|/vo/|/talk|/words/|/taunts?/|/announcer", "speech"),
    (r"ambien|ambiance|atmos|/environment|/amb/|/nature/|/weather/|/birds?/", "ambience"),
    (r"music|/musics?/|soundtrack|/songs?/|/tracks/|/bgm/|/mus/|/ost/|/themes?/", "music"),
    (r"drum|instrument|/samples/|/piano|/guitar|/synth|/organ|/bass/|/percussion", "instrument"),
    (r"sound|sfx|/effects?/|/snd/|/audio/|/fx/|/noises?/", "sfx"),
]


def kind_of(pkg: str, rel: str, dur: float) -> str:
    if pkg in PKG_KIND:
        return PKG_KIND[pkg]
    low = "/" + rel.lower()
    for pre, pat, k in PKG_PATH_KIND:
        if re.search(pre, pkg) and re.search(pat, low):
            return k
    for pat, k in PATH_KIND:
        if re.search(pat, low):
            return k
    return "music" if dur >= 60 else "other"


def licence_of(root: str, pkg: str) -> str:
    path = os.path.join(root, "usr/share/doc", pkg, "copyright")
    if not os.path.exists(path):  # doc dir may be a symlink to another package's
        return "unknown"
    text = open(path, errors="replace").read()
    seen = []
    for m in re.finditer(r"^License:[ \t]*(\S.*)$", text, re.M):
        for part in re.split(r"\s+(?:or|and)\s+|\s*[|,]\s*", m.group(1).strip()):
            part = part.strip()
            if part and len(part) < 40 and part not in seen and not FONTISH.search(part):
                seen.append(part)
    if not seen:  # not machine-readable: look for well-known texts
        for pat, name in [(r"Library General Public License|Lesser General Public License", "LGPL"),
                          (r"(?<!Lesser )(?<!Library )General Public License.{0,80}version 3", "GPL-3+"),
                          (r"(?<!Lesser )(?<!Library )General Public License.{0,80}version 2", "GPL-2+"),
                          (r"licensed under the GPL", "GPL"),
                          (r"Attribution[- ]Share[- ]?Alike|licenses/by-sa", "CC-BY-SA"),
                          (r"Creative Commons Attribution(?![- ]Share)|licenses/by/", "CC-BY"),
                          (r"Permission is hereby granted, free of charge", "Expat"),
                          (r"Redistribution and use in source and binary forms", "BSD"),
                          (r"public domain", "public-domain")]:
            if re.search(pat, text, re.I | re.S) and name not in seen:
                seen.append(name)
    return " / ".join(seen[:6]) + (" / ..." if len(seen) > 6 else "") if seen else "unknown"


def extract_archive(arc: str) -> None:
    """Extract the audio members of a zip/pk3 archive into ARCHIVE.d/ (once)."""
    out = arc + ".d"
    if os.path.exists(os.path.join(out, ".done")):
        return
    try:
        with zipfile.ZipFile(arc) as z:
            for info in z.infolist():
                n = info.filename
                if info.is_dir() or not n.lower().endswith(AUDIO_EXT) or ".." in n.split("/"):
                    continue
                z.extract(info, out)
    except (zipfile.BadZipFile, OSError) as e:
        print(f"  archive {arc}: {e}", file=sys.stderr)
        return
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, ".done"), "w").close()


def sniff_audio(p: str) -> bool:
    """An extension-less file (blobwars' music/ and sound/) that starts like Ogg, WAVE or FLAC."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[:4] in (b"OggS", b"fLaC") or (head[:4] == b"RIFF" and head[8:12] == b"WAVE")


def walk_audio(root: str):
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p):
                continue
            if f.lower().endswith(ARCHIVE_EXT):
                extract_archive(p)
                if f + ".d" not in dirs and os.path.isdir(p + ".d"):
                    dirs.append(f + ".d")  # walked after the other dirs
            elif f.lower().endswith(AUDIO_EXT) or ("." not in f and sniff_audio(p)):
                yield p


def file_key(p: str) -> str:
    with open(p, "rb") as fh:
        h = hashlib.sha1(fh.read(1 << 20)).hexdigest()
    return f"{h}:{os.path.getsize(p)}"


def main() -> None:
    work, specs = sys.argv[1], sys.argv[2:]
    audio = os.path.join(work, "audio")
    os.makedirs(audio, exist_ok=True)
    cache_path = os.path.join(work, "scan_cache.tsv")
    cache = {}
    if os.path.exists(cache_path):
        for line in open(cache_path):
            p, size, mtime, dur, key = line.rstrip("\n").split("\t")
            cache[p] = (size, mtime, dur, key)
    new_cache = {}
    seen_keys, rows, links = {}, [], set()
    stats = {}
    for spec in specs:
        pkg, ver = spec.split("=", 1)
        if EXCLUDE.search(pkg):
            sys.exit(f"{pkg} is on the exclusion list")
        root = os.path.join(work, "pkgs", pkg)
        lic = licence_of(root, pkg)
        st = stats.setdefault(pkg, {"ver": ver, "lic": lic, "n": 0, "s": 0.0, "kinds": {},
                                    "bad": 0, "short": 0, "dup": 0})
        for p in walk_audio(root):
            rel = os.path.relpath(p, root)
            stt = os.stat(p)
            c = cache.get(p)
            if c and c[0] == str(stt.st_size) and c[1] == str(int(stt.st_mtime)):
                dur, key = float(c[2]), c[3]
            else:
                try:
                    info = sf.info(p)
                    dur = info.frames / info.samplerate if info.samplerate else -1.0
                except Exception:
                    dur = -1.0
                key = file_key(p)
            new_cache[p] = (str(stt.st_size), str(int(stt.st_mtime)), f"{dur:.3f}", key)
            if dur < 0:
                st["bad"] += 1
                continue
            if dur < MIN_DUR:
                st["short"] += 1
                continue
            if key in seen_keys:
                st["dup"] += 1
                continue
            seen_keys[key] = rel
            short = rel[len("usr/share/"):] if rel.startswith("usr/share/") else rel
            name = pkg + "__" + short.replace("/", "__").replace(" ", "_").replace("\t", "_")
            target = os.path.relpath(p, audio)
            link = os.path.join(audio, name)
            if not (os.path.islink(link) and os.readlink(link) == target):
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(target, link)
            links.add(name)
            k = kind_of(pkg, rel, dur)
            rows.append((name, pkg, ver, k, f"{dur:.3f}", lic))
            st["n"] += 1
            st["s"] += dur
            kk = st["kinds"].setdefault(k, [0, 0.0])
            kk[0] += 1
            kk[1] += dur
        print(f"{pkg}: {st['n']} files, {st['s']/3600:.2f} h (bad {st['bad']}, short {st['short']}, "
              f"dup {st['dup']})", flush=True)
    for name in os.listdir(audio):  # links from an earlier, different package list
        if name not in links:
            os.remove(os.path.join(audio, name))
    with open(cache_path, "w") as fh:
        for p, v in sorted(new_cache.items()):
            fh.write("\t".join((p,) + v) + "\n")
    with open(os.path.join(work, "manifest.tsv"), "w") as fh:
        fh.write("path\tpackage\tversion\tkind\tduration_s\tlicence\n")
        for r in rows:
            fh.write("\t".join(r) + "\n")
    # SUMMARY.md
    tot = {}
    for st in stats.values():
        for k, (n, s) in st["kinds"].items():
            t = tot.setdefault(k, [0, 0.0])
            t[0] += n
            t[1] += s
    out = ["# embedtool-general2: freely licensed audio from Debian 12 packages", "",
           "Made by `bench/fetch_general.sh`. One link per distinct audio file in `audio/`; "
           "columns per file in `manifest.tsv`.", "",
           "## Totals per kind", "", "| kind | files | hours |", "|---|---:|---:|"]
    for k in sorted(tot, key=lambda k: -tot[k][1]):
        out.append(f"| {k} | {tot[k][0]} | {tot[k][1]/3600:.2f} |")
    out.append(f"| **all** | {sum(t[0] for t in tot.values())} | "
               f"{sum(t[1] for t in tot.values())/3600:.2f} |")
    out += ["", "## Per package", "",
            "| package | version | licence | files | hours | kinds (hours) |", "|---|---|---|---:|---:|---|"]
    for pkg in sorted(stats, key=lambda p: -stats[p]["s"]):
        st = stats[pkg]
        if not st["n"]:
            continue
        ks = ", ".join(f"{k} {v[1]/3600:.2f}" for k, v in sorted(st["kinds"].items(), key=lambda kv: -kv[1][1]))
        out.append(f"| {pkg} | {st['ver']} | {st['lic']} | {st['n']} | {st['s']/3600:.2f} | {ks} |")
    empty = [p for p in stats if not stats[p]["n"]]
    if empty:
        out += ["", "Packages with no usable audio: " + ", ".join(sorted(empty))]
    with open(os.path.join(work, "SUMMARY.md"), "w") as fh:
        fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
PY
