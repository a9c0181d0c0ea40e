"""The one progress protocol of the library's stages: ``progress(stage, done, total)``.

``stage`` is a short human-readable name of the step running ("embedding", "segment index: adding vectors");
``done`` of ``total`` units are finished. Stages call it often and cheaply; a CLI draws bars from it, a script can
log it or pass None. (``extract`` and ``train`` report richer state: ``ExtractProgress`` after each file and one
event dict per training epoch, which their commands print as tables.)
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...
