"""Benchmark and check of embedtool on a CUDA GPU: does the CUDA path work, and how fast is it?

Run on a machine with a GPU (the development machine has none; `--device cpu` runs the same checks there):

    .venv/bin/python bench/bench_gpu.py                  # ~4 min on one H100/H200 with 16 CPU cores
    .venv/bin/python bench/bench_gpu.py --files 6 --seconds 20 --steps 10 --check-steps 4 --device cpu   # a quick look

1. Writes a generated corpus (``--files`` x ``--seconds`` of 16 kHz audio: each file its own set of harmonic
   voices, drum hits and coloured noise, so tracks differ) and runs ``embedtool extract`` on it.
2. Throughput (triplets/s) of the ``default`` and ``thesis`` presets, side by side in one run: the trainer's real
   data pipeline on the GPU (bf16 autocast, channels-last; 0 and ``--workers`` DataLoader workers) and on this
   machine's CPU, and the bare training step on in-memory tensors on the GPU (the compute floor).
3. The CUDA path as a user runs it, through the CLI: ``train --device cuda`` (losses finite); ``train --resume
   --device cpu`` continues that run on the CPU for one more epoch; ``embed --device cuda`` and ``embed --device
   cpu --full`` give the same segment embeddings and track descriptors (lowest cosine similarity reported and
   checked >= 0.999: embedding runs in float32 on both); ``index`` and ``neighbours --mode identify`` name the track
   a 5 s excerpt comes from; the bundled ``general`` model (``train --pretrained general``) gives the same track
   descriptors on the GPU and on the CPU.

Prints tables and writes bench/results/bench_gpu-<time>.json (or ``--out``). Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from _common import log, pipeline_rate, print_table, result_path, synthetic_rate, timestamp, write_json

SR = 16000


def generated_track(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One 'piece': a few harmonic voices playing random notes, a drum pattern and coloured noise."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n, dtype=np.float64)
    for _ in range(rng.integers(1, 4)):  # voices: own timbre (partials) and register
        partials = rng.uniform(0.2, 1.0, size=rng.integers(1, 8))
        base = rng.uniform(80, 800)
        note_s = rng.uniform(0.15, 1.0)
        for start in np.arange(0, seconds, note_s):
            f = base * 2 ** (rng.integers(-5, 8) / 12)
            i0, i1 = int(start * SR), min(n, int((start + note_s) * SR))
            tt = t[i0:i1] - start
            env = np.exp(-tt * rng.uniform(1, 8))
            wave = sum(a * np.sin(2 * np.pi * f * (k + 1) * tt) for k, a in enumerate(partials) if f * (k + 1) < SR / 2)
            out[i0:i1] += 0.3 * env * wave / len(partials)
    beat = rng.uniform(0.25, 0.6)
    decay = rng.uniform(10, 60)
    hit_len = int(0.3 * SR)
    for start in np.arange(0, seconds - 0.3, beat):
        if rng.random() < 0.7:
            i0 = int(start * SR)
            tt = np.arange(hit_len) / SR
            hit = rng.normal(size=hit_len) * np.exp(-tt * decay) * rng.uniform(0.1, 0.5)
            hit += np.sin(2 * np.pi * rng.uniform(50, 120) * tt) * np.exp(-tt * 20) * rng.uniform(0, 0.6)
            out[i0 : i0 + hit_len] += hit
    noise = np.cumsum(rng.normal(size=n)) if rng.random() < 0.5 else rng.normal(size=n)
    noise = noise - np.convolve(noise, np.ones(400) / 400, mode="same")  # no DC drift
    out += 0.02 * rng.uniform(0.2, 1) * noise / (np.std(noise) + 1e-9)
    return (0.8 * out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)


def write_corpus(folder: Path, files: int, seconds: float, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = folder / f"piece_{i:03d}.flac"
        if not path.exists():
            sf.write(str(path), generated_track(np.random.default_rng(seed + i), seconds), SR)
        paths.append(path)
    return paths


def cli(workspace: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """Run ``embedtool -w WORKSPACE ARGS`` as a user would; the output, or an error naming the command."""
    cmd = [sys.executable, "-m", "embedtool", "-q", "-w", str(workspace), *args]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    log(f"embedtool {' '.join(args)}: exit {done.returncode} in {time.perf_counter() - t:.1f} s")
    if done.returncode not in ok:
        raise RuntimeError(f"embedtool {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def throughput(features: Path, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from embedtool.features.store import FeatureStore
    from embedtool.features.windows import segment_frames_for
    from embedtool.model.settings import TrainSettings

    fs = FeatureStore(features).settings
    rows = []
    gpu = args.device == "cuda"
    for preset in ("default", "thesis"):
        base = TrainSettings.from_preset(preset)
        seg = segment_frames_for(base.segment_seconds, fs.frames_per_second)
        steps = args.steps if preset == "default" else max(2, args.steps // 4)
        cpu_steps = max(2, steps // 10)
        row: dict[str, Any] = {"preset": preset, "segment": f"{seg}x{fs.n_mels}", "batch": base.batch_size}
        row["cpu_pipeline"] = pipeline_rate(features, work, replace(base, device="cpu"), cpu_steps)
        if gpu:
            row["gpu_pipeline_0_workers"] = pipeline_rate(features, work, replace(base, device="cuda"), steps)
            row[f"gpu_pipeline_{args.workers}_workers"] = pipeline_rate(
                features, work, replace(base, device="cuda", workers=args.workers), steps
            )
            row["gpu_bare_step"] = synthetic_rate(replace(base, device="cuda"), fs.n_mels, seg, steps)
            best = max(row["gpu_pipeline_0_workers"], row[f"gpu_pipeline_{args.workers}_workers"])
            row["gpu_over_cpu"] = best / row["cpu_pipeline"]
            row["pipeline_over_bare"] = best / row["gpu_bare_step"]
        rows.append(row)
        log(f"throughput {preset}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)))
    return rows


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return np.sum(a * b, axis=1)


def cli_chain(corpus: Path, workspace: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from embedtool.embedding.store import EmbeddingStore

    checks: dict[str, Any] = {}
    common = ["--preset", "default", "--steps-per-epoch", str(args.check_steps), "--seed", "0", "--json"]
    report = json.loads(cli(workspace, "train", *common, "--epochs", "2", "--device", args.device))
    checks["train_device"] = report["device"]
    checks["train_workers"] = report.get("workers")  # the default (auto) resolved
    history = [json.loads(line) for line in (workspace / "model" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["train_loss"] for h in history if "train_loss" in h]
    checks["train_losses"] = losses
    checks["losses_finite"] = bool(losses) and all(np.isfinite(losses))
    report = json.loads(cli(workspace, "train", *common, "--epochs", "3", "--device", "cpu", "--resume"))
    checks["resumed_on_cpu"] = bool(report.get("resumed")) and report["device"] == "cpu"

    cli(workspace, "embed", "--device", args.device, "--full", "--json")
    store = EmbeddingStore(workspace / "embeddings")
    on_device = (store.segment_vectors().copy(), store.track_descriptors().copy())
    cli(workspace, "embed", "--device", "cpu", "--full", "--json")
    store = EmbeddingStore(workspace / "embeddings")
    on_cpu = (store.segment_vectors(), store.track_descriptors())
    checks["segment_cosine_min"] = float(cosines(on_device[0], on_cpu[0]).min())
    checks["descriptor_cosine_min"] = float(cosines(on_device[1], on_cpu[1]).min())
    checks["embeddings_match"] = min(checks["segment_cosine_min"], checks["descriptor_cosine_min"]) >= 0.999

    cli(workspace, "embed", "--device", args.device, "--full")
    cli(workspace, "index")
    source = sorted(corpus.glob("*.flac"))[3]
    audio, sr = sf.read(str(source), dtype="float32")
    excerpt = work / "excerpt.wav"
    sf.write(str(excerpt), audio[int(7 * sr) : int(12 * sr)], sr)
    # exit 3 is identify's "no match" (a short training may not clear the calibrated threshold): the ranking is
    # what is checked here, the decision is reported.
    answer = json.loads(cli(workspace, "neighbours", str(excerpt), "--mode", "identify", "--json", ok=(0, 3)))
    top = answer["matches"][0]
    checks["identify_top"] = Path(top["path"]).name
    checks["identify_right"] = top["path"] == str(source)
    checks["identify_accepted"] = not answer.get("no_match", False)

    # The bundled general model (a pair: its companion's descriptors are appended) on the device and on the CPU.
    general = work / "ws-general"
    shutil.rmtree(general, ignore_errors=True)
    shutil.copytree(workspace / "features", general / "features")
    cli(general, "train", "--pretrained", "general")
    cli(general, "embed", "--device", args.device, "--full")
    on_device = EmbeddingStore(general / "embeddings").track_descriptors().copy()
    cli(general, "embed", "--device", "cpu", "--full")
    on_cpu = EmbeddingStore(general / "embeddings").track_descriptors()
    checks["general_descriptor_cosine_min"] = float(cosines(on_device, on_cpu).min())
    checks["general_matches"] = checks["general_descriptor_cosine_min"] >= 0.999
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "embedtool-bench-gpu"))
    parser.add_argument("--files", type=int, default=48, help="generated tracks")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each generated track")
    parser.add_argument("--steps", type=int, default=200, help="throughput: GPU steps of the default preset")
    parser.add_argument("--workers", type=int, default=8, help="throughput: DataLoader workers of the second GPU row")
    parser.add_argument("--check-steps", type=int, default=40, help="CLI chain: steps per epoch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON result path (default bench/results/bench_gpu-<time>.json)")
    args = parser.parse_args()
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
    results["torch"] = torch.__version__
    log(f"device {args.device} ({results.get('gpu', 'no GPU')}), {os.cpu_count()} CPUs, torch {torch.__version__}")

    corpus = work / "corpus"
    write_corpus(corpus, args.files, args.seconds)
    workspace = work / "ws"
    cli(workspace, "extract", str(corpus), "-j", str(min(8, os.cpu_count() or 1)))
    results["throughput"] = throughput(workspace / "features", work, args)
    print_table(f"throughput (triplets/s; {results.get('gpu', 'CPU only')})", results["throughput"])
    try:
        results["checks"] = cli_chain(corpus, workspace, work, args)
    except RuntimeError as exc:  # a failing CLI step is a finding: keep the figures measured so far
        results["checks"] = {"error": str(exc)}
    print(json.dumps(results["checks"], indent=2))
    out = write_json(Path(args.out) if args.out else result_path("bench_gpu", timestamp()), results)
    log(f"wrote {out}")
    required = ("losses_finite", "resumed_on_cpu", "embeddings_match", "identify_right", "general_matches")
    sys.exit(0 if all(results["checks"].get(k) for k in required) else 1)


if __name__ == "__main__":
    main()
