"""The one progress protocol of the library's stages: ``progress(stage, done, total)``.

``stage`` is a short human-readable name of the step running ("embedding", "segment index: adding vectors");
``done`` of ``total`` units are finished. Stages call it often and cheaply; a CLI draws bars from it, a script can
log it or pass None. (``extract`` and ``train`` report richer state: ``ExtractProgress`` after each file and a
:class:`TrainEvent` per training step, epoch and note, which their commands print as tables.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...


TrainEventKind = Literal["start", "step", "epoch", "note", "teacher"]


@dataclass(frozen=True)
class TrainEvent(Mapping[str, Any]):
    """One event of a training run. ``kind``: "start" (the run's plan: total_steps, start_step, epochs, train and
    val tracks, parameters, device, val_metric, notes), "step" (step, epoch, loss, triplet_accuracy, lr,
    triplets_per_s), "epoch" (the epoch's metrics, ``best`` when kept), "note" (message), "teacher" (teacher, done,
    total: a distillation teacher's outputs being computed). Read as a mapping, ``event["loss"]``, with its kind
    under "event" (what ``to_dict`` writes)."""

    kind: TrainEventKind
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, event: Mapping[str, Any]) -> TrainEvent:
        facts = {k: v for k, v in event.items() if k != "event"}
        return cls(event["event"], facts)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **self.facts}

    def __getitem__(self, key: str) -> Any:
        return self.kind if key == "event" else self.facts[key]

    def __iter__(self) -> Iterator[str]:
        yield "event"
        yield from self.facts

    def __len__(self) -> int:
        return 1 + len(self.facts)


TrainProgress = Callable[[TrainEvent], None]
