"""Resumable training checkpoints: tensors in a ``weights_only``-loadable ``.pt``, everything else in JSON.

A checkpoint folder holds ``checkpoint.pt`` (model and optimiser state dicts, torch RNG states, a token),
``checkpoint.json`` (epoch, step, best metric, history, settings, input fingerprints and the same token) and
``best.pt`` (a plain state dict of the best weights so far). Each file is replaced atomically and the JSON is
written last; the shared token lets a reader reject a pair of files from two different saves.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import torch

from embedtool.artefacts import atomic_write_bytes, atomic_write_json
from embedtool.errors import IncompatibleArtefactError

STATE_FILE = "checkpoint.pt"
INFO_FILE = "checkpoint.json"
BEST_FILE = "best.pt"


def save_tensors(path: Path, obj: Any) -> None:
    """``torch.save`` through an atomic rename."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or tampered file
        raise IncompatibleArtefactError(f"Cannot read checkpoint file {path}: {exc}") from exc


def save_checkpoint(
    directory: Path,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    info: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # The current GPU's generator only: under DDP every rank restores it into its own GPU, whose generator
        # was seeded alike and drew as often as rank 0's.
        rng["cuda_device"] = torch.cuda.get_rng_state()
    save_tensors(
        directory / STATE_FILE, {"model": model_state, "optimizer": optimizer_state, "rng": rng, "token": token}
    )
    if best_state is not None:
        save_tensors(directory / BEST_FILE, best_state)
    atomic_write_json(directory / INFO_FILE, {**info, "token": token})


def has_checkpoint(directory: Path) -> bool:
    directory = Path(directory)
    return (directory / INFO_FILE).is_file() and (directory / STATE_FILE).is_file()


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensor state, info) of a checkpoint folder; refuses mismatched or unreadable files."""
    directory = Path(directory)
    try:
        info = json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise IncompatibleArtefactError(f"Cannot read {directory / INFO_FILE}: {exc}") from exc
    state = load_tensors(directory / STATE_FILE)
    if not isinstance(state, dict) or state.get("token") != info.get("token"):
        raise IncompatibleArtefactError(
            f"The checkpoint files in {directory} come from different saves; start a fresh training."
        )
    return state, info


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if not torch.cuda.is_available():
        return
    if "cuda_device" in rng:
        torch.cuda.set_rng_state(rng["cuda_device"])
    elif "cuda" in rng:  # a checkpoint from before: every GPU's generator
        torch.cuda.set_rng_state_all(rng["cuda"])
