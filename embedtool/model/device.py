"""Which torch device a stage runs on: ``auto`` (CUDA when there is a GPU), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from embedtool.errors import ConfigError


def resolve_device(device: str, option: str = "device") -> torch.device:
    """The device ``device`` names; asking for CUDA without a GPU is a ConfigError naming the ``option`` asked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option} is 'cuda', but no CUDA GPU is available (use cpu or auto)")
    return torch.device(device)


def resolve_device_name(device: str, option: str = "embed.device") -> str:
    """:func:`resolve_device` as a name ("cpu", "cuda")."""
    return resolve_device(device, option).type
