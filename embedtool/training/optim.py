"""The optimiser and the learning-rate schedule of training (``TrainSettings``: optimizer, lr, lr_schedule, ...)."""

from __future__ import annotations

import math

import torch

from embedtool.model.settings import TrainSettings


def lr_at(step: int, settings: TrainSettings, total_steps: int) -> float:
    """Learning rate at a global step: linear warm-up, then constant, step decay or cosine to zero."""
    s = settings
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.lr_schedule == "step":
        return s.lr * s.lr_decay ** (step // s.lr_decay_steps)
    if s.lr_schedule == "cosine":
        span = max(1, total_steps - s.warmup_steps)
        t = min(1.0, (step - s.warmup_steps) / span)
        return s.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    return s.lr


def make_optimizer(net: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """Weight decay on convolution weights only (as the seed's Keras kernel_regularizer)."""
    conv, other = [], []
    for name, p in net.named_parameters():
        (conv if p.dim() == 4 and name.endswith("weight") else other).append(p)
    groups = [{"params": conv, "weight_decay": settings.weight_decay}, {"params": other, "weight_decay": 0.0}]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    return torch.optim.Adam(groups, lr=settings.lr)
