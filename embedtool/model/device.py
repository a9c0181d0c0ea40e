"""Which torch device a stage runs on: ``auto`` (CUDA when there is a GPU), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from embedtool.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(device)


def resolve_device_name(device: str, option: str = "embed.device") -> str:
    """:func:`resolve_device` as a name ("cpu", "cuda"), with the error naming the ``option`` that asked for it."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} is 'cuda' but no CUDA device is available")
    return device
