"""What the benchmarks in bench/ share: where results and corpora live, logging, result files, and the
training-throughput measurements of bench_train and bench_gpu.

Scripts run as ``python bench/NAME.py`` (``./dev bench NAME``), so bench/ is on ``sys.path`` and they import this
module as ``from _common import ...``. Only the standard library is imported here at module level: some scripts
set thread variables before numpy is imported, and ``--help`` stays quick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
"""bench/results: where the scripts write their JSON (git-ignored, except the files .gitignore names)."""

CORPORA = Path.home() / ".cache" / "embedtool-corpora"
"""The benchmark corpora (music-dev, drums), fetched by ../shared/corpora/fetch."""

MUSIC_DEV = CORPORA / "music-dev"
"""The music corpus: game-soundtrack tracks in one folder per style."""

WS_MUSIC = RESULTS / "ws-music"
"""The music-dev workspace ``bench_reid.py --prepare`` builds and ``bench_query.py`` reads by default."""


def share_features(workspace_root: Path, features: Path) -> None:
    """Give a candidate model's workspace the features of another (a symlink, made once): no second extraction."""
    workspace_root.mkdir(parents=True, exist_ok=True)
    link = workspace_root / "features"
    if not link.exists():
        link.symlink_to(features.resolve(), target_is_directory=True)


def log(msg: str) -> None:
    """Print ``msg`` with the time of day, flushed at once (long runs are followed live)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timestamp() -> str:
    """The current local time as used in result file names: YYYYmmdd-HHMMSS."""
    return time.strftime("%Y%m%d-%H%M%S")


def result_path(name: str, stamp: str | None = None) -> Path:
    """bench/results/NAME.json, or NAME-STAMP.json for scripts that keep every run."""
    return RESULTS / (f"{name}-{stamp}.json" if stamp else f"{name}.json")


def write_json(
    path: Path, data: Any, *, default: Callable[[Any], Any] | None = None, final_newline: bool = False
) -> Path:
    """Write ``data`` to ``path`` as JSON indented by 2 (parent folders created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=default) + ("\n" if final_newline else ""))
    return path


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` as a plain `` | ``-separated table under ``title``; floats with 3 decimals."""
    print(f"\n{title}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys))


def synthetic_rate(settings: Any, n_mels: int, segment_frames: int, steps: int) -> float:
    """Triplets/s of the bare training step on in-memory random tensors (no data pipeline), on
    ``settings.device`` with the trainer's CUDA choices (bf16 autocast, channels-last) when that is a GPU."""
    from contextlib import nullcontext

    import torch

    from embedtool.model.device import resolve_device
    from embedtool.model.network import build_network
    from embedtool.training.losses import triplet_loss
    from embedtool.training.optim import make_optimizer

    torch.manual_seed(0)
    device = resolve_device(settings.device)
    cuda = device.type == "cuda"
    net = build_network(settings).train().to(device)
    if cuda and settings.channels_last:
        net.to(memory_format=torch.channels_last)
    opt = make_optimizer(net, settings)
    bs = settings.batch_size
    x = torch.randn(3 * bs, 1, segment_frames, n_mels, device=device)
    if cuda and settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tracks = torch.arange(bs, device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and settings.amp else nullcontext
    elapsed = 0.0
    for i in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast():
            emb = net(x)
        a, p, n = emb.float().chunk(3)
        loss, _ = triplet_loss(a, p, n, settings.loss, settings.margin, settings.norm_penalty, settings.mining,
                               anchor_track=tracks, negative_track=tracks + bs)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first step pays one-off costs
            elapsed += time.perf_counter() - t
    return steps * bs / elapsed


def pipeline_rate(features: Path, work: Path, settings: Any, steps: int) -> float:
    """Triplets/s measured by the trainer itself over one short epoch (validation time excluded)."""
    from embedtool.training.trainer import train

    s = replace(settings, epochs=1, steps_per_epoch=steps + 1, val_triplets=0, split_by="track", warmup_steps=0)
    report = train(features, work / "tp-split", work / "tp-model", s)
    return report.triplets_per_s


def decode_for(path: str, sample_rate: int) -> Any:
    """Mono float32 samples of an audio file at ``sample_rate`` (embedtool's decoder); an empty file raises."""
    from embedtool.audio.decode import decode_file

    audio = decode_file(path, sample_rate).samples
    if audio.size == 0:
        raise ValueError("decoded to no samples")
    return audio


def smoke_test(model_class: Callable[[], Any], dim: int, doc: str | None) -> int:
    """``python bench/X_features.py FILE...``: each file's vector shape and norm, checked to be ``dim`` finite
    numbers; the usage line of ``doc`` without files."""
    import sys

    import numpy as np

    if len(sys.argv) < 2:
        print(next((line.strip() for line in (doc or "").splitlines() if "FILE..." in line), "FILE..."))
        return 2
    model = model_class()
    for path in sys.argv[1:]:
        vector, seconds = model.vector(path)
        assert vector.shape == (dim,) and np.isfinite(vector).all(), (vector.shape, path)
        print(f"{path}: {seconds:.2f} s -> {vector.shape[0]}-d, norm {np.linalg.norm(vector):.3f}")
    return 0
