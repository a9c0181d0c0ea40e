"""Search latency through `embedtool serve` (warm: model, index and tables open once) against the cold CLI.

Starts a real server (`embedtool -w WS serve`, uvicorn) on a free port and times, from a client on the same
machine with the standard library's HTTP client:

- ``GET /api/search?track=ID`` (similar, k=10) for ``--queries`` seeded library tracks;
- ``POST /api/search?mode=identify`` with a 3 s excerpt (wav) cut from each of those tracks;

then runs ``embedtool -w WS neighbours ID --format json`` as a fresh process for ``--cold`` of the same tracks
(what a script calling the CLI per query pays: Python start, imports, loading the model and index). The first
request of each kind is a warm-up and is not counted. Prints p50 / p95 and the ratio to the cold CLI.

    ./dev bench bench_serve --workspace WS      # any indexed workspace, e.g. bench_identify_real's music-dev

``--aiff-minutes N`` measures instead what answering ``Range: bytes=0-`` for a transcoded track costs: a fresh
process per variant makes the WAV of an N-minute 44.1 kHz stereo AIFF and reports its peak RSS over the RSS
before, for the server's earlier code (the whole body decoded into memory, media.py of commit 67fdd7b) and
now (``WavTranscode.stream``: 256 KB pieces sent as decoded).

    ./dev bench bench_serve --aiff-minutes 10

Writes bench/results/bench_serve-<stamp>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from _common import result_path, timestamp, write_json

EMBEDTOOL = [sys.executable, "-m", "embedtool"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(base: str, server: subprocess.Popen, timeout_s: float = 300.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}): {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status", timeout=2):
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer within the timeout")


def multipart(name: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def timed(request: urllib.request.Request) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        data = json.loads(answer.read())
    return time.perf_counter() - t0, data


def excerpt_wav(path: str, seconds: float, rng: np.random.Generator) -> bytes:
    import soundfile as sf

    from embedtool.audio.decode import decode_file

    audio = decode_file(path, 16000).samples
    n = int(seconds * 16000)
    start = int(rng.integers(0, max(1, len(audio) - n)))
    buf = io.BytesIO()
    sf.write(buf, audio[start : start + n], 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# One variant of the transcoding measurement, run in a fresh interpreter: argv = variant, aiff path, module path.
TRANSCODE_PROBE = """
import importlib.util, sys
variant, source, module = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("media_under_test", module)
media = sys.modules["media_under_test"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(media)
from pathlib import Path
import av, numpy  # imported before the baseline, as a running server has them


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024


wav = media.WavTranscode.open(Path(source))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
before = status("VmRSS")
sent = 0
if variant == "whole":
    sent = len(wav.read(0, wav.size))
else:
    for piece in wav.stream(0, wav.size):
        sent += len(piece)
print(sent, status("VmHWM") - before)
"""


def transcode_rss(minutes: float) -> dict[str, dict[str, float]]:
    """Peak RSS (MB over the baseline) of making the whole WAV of an N-minute AIFF, before and after streaming."""
    import tempfile

    import soundfile as sf

    repo = Path(__file__).resolve().parent.parent
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sr = 44100
        t = np.arange(int(minutes * 60 * sr)) / sr
        source = Path(tmp) / "long.aiff"
        sf.write(source, (0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 331 * t)], 1)), sr)
        del t
        old = Path(tmp) / "media_before.py"
        old.write_bytes(subprocess.run(["git", "-C", str(repo), "show", "67fdd7b:embedtool/serve/media.py"],
                                       check=True, capture_output=True).stdout)  # fmt: skip
        variants = {"whole body (before)": ("whole", old),
                    "streamed (now)": ("stream", repo / "embedtool" / "serve" / "media.py")}  # fmt: skip
        for name, (variant, module) in variants.items():
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", TRANSCODE_PROBE, variant, str(source), str(module)],
                                 check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
            rows[name] = {"bytes": int(out[0]), "peak_rss_mb_over_baseline": round(float(out[1]), 1),
                          "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return rows


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--aiff-minutes", type=float, default=0.0, help="measure streamed transcoding instead")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.aiff_minutes:
        rows = transcode_rss(args.aiff_minutes)
        print(f"Range: bytes=0- of a {args.aiff_minutes:g}-minute 44.1 kHz stereo AIFF, transcoded to WAV")
        for name, r in rows.items():
            print(f"{name:<22} {r['bytes'] / 1e6:8.1f} MB sent  peak RSS +{r['peak_rss_mb_over_baseline']:.0f} MB"
                  f"  {r['seconds']:.1f} s")  # fmt: skip
        out = write_json(result_path("bench_serve", timestamp()), {"argv": sys.argv, "transcode": rows})
        print(f"written {out}")
        return
    if args.workspace is None:
        parser.error("give --workspace (search latency) or --aiff-minutes (transcoding memory)")
    ws = str(args.workspace.expanduser().resolve())

    import pyarrow.parquet as pq

    # tracks of 1 s or more: a 3 s excerpt of a drum hit would be under the shortest usable query
    tracks = [t for t in pq.read_table(Path(ws) / "index" / "tracks.parquet").to_pylist() if t["duration_s"] >= 1.0]
    rng = np.random.default_rng(args.seed)
    chosen = [tracks[i] for i in rng.choice(len(tracks), min(args.queries + 1, len(tracks)), replace=False)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*EMBEDTOOL, "-q", "-w", ws, "serve", "--port", str(port)], stderr=subprocess.PIPE)
    try:
        startup = wait_until_up(base, server)
        similar, identify, right = [], [], 0
        for i, t in enumerate(chosen):
            s, _ = timed(urllib.request.Request(f"{base}/api/search?track={t['track_id']}&mode=similar&k=10"))
            body, ctype = multipart("file", "excerpt.wav", excerpt_wav(t["path"], 3.0, rng))
            request = urllib.request.Request(
                f"{base}/api/search?mode=identify&k=5", data=body, headers={"Content-Type": ctype}, method="POST"
            )
            u, answer = timed(request)
            if i == 0:
                continue  # warm-up
            similar.append(s)
            identify.append(u)
            matches = answer.get("matches") or []
            right += bool(matches) and matches[0]["track_id"] == t["track_id"] and not answer.get("no_match")
    finally:
        server.terminate()
        server.wait(timeout=30)
    cold = []
    for t in chosen[1 : 1 + args.cold]:
        t0 = time.perf_counter()
        subprocess.run([*EMBEDTOOL, "-q", "-w", ws, "neighbours", t["track_id"], "--format", "json"],
                       check=True, capture_output=True)  # fmt: skip
        cold.append(time.perf_counter() - t0)
    rows = {
        "server start (s)": round(startup, 2),
        "similar, by track (warm API)": percentiles(similar),
        "identify, 3 s upload (warm API)": percentiles(identify),
        "similar, by track (cold CLI process)": percentiles(cold),
    }
    ratio = rows["similar, by track (cold CLI process)"]["p50_ms"] / rows["similar, by track (warm API)"]["p50_ms"]
    print(f"workspace {ws}: {len(tracks)} tracks; server up in {startup:.1f} s")
    print(f"{'query':<40} {'n':>4} {'p50 ms':>9} {'p95 ms':>9}")
    for name, r in rows.items():
        if isinstance(r, dict):
            print(f"{name:<40} {r['n']:4d} {r['p50_ms']:9.1f} {r['p95_ms']:9.1f}")
    print(f"cold CLI / warm API (p50, similar): {ratio:.0f}x")
    print(f"identify uploads named right and accepted: {right}/{len(identify)}")
    out = write_json(
        result_path("bench_serve", timestamp()),
        {"argv": sys.argv, "tracks": len(tracks), "rows": rows, "cold_over_warm": ratio, "identify_right": right},
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
