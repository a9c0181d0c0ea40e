"""Uploaded query audio: bounded in bytes while it arrives, bounded in duration while it is decoded (a container
may declare no duration, or a false one), kept in a temporary folder of its own that is removed when the request
is answered."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from embedtool.errors import EmbedtoolError, InputError

CHUNK = 1 << 20
CHECK_RATE = 8000  # the duration check decodes at this rate: cheap, and its sample count is the duration
log = logging.getLogger("embedtool.serve")
UNREADABLE = "The upload is not audio the server can read: not a known audio format, or a damaged file."


class UploadTooLarge(EmbedtoolError):
    """An upload over the size or duration limit: HTTP 413."""


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` ends in 413 before it is read (by its Content-Length)
    or as soon as it passes the limit (a chunked body)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return
        seen, exceeded, answered = 0, False, False

        async def counted() -> dict:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                raise UploadTooLarge(too_large_message(self.max_bytes))
            return message

        async def answer(message: dict) -> None:
            # The framework turns an error while reading the body into its own answer (400): say 413 instead.
            nonlocal answered
            if not exceeded:
                await send(message)
            elif not answered:
                answered = True
                await _send_413(send, self.max_bytes)

        await self.app(scope, counted, answer)


def too_large_message(max_bytes: int) -> str:
    return f"The upload is larger than the server's limit of {max_bytes / 1e6:g} MB."


async def _send_413(send: Any, max_bytes: int) -> None:
    import json

    body = json.dumps({"error": too_large_message(max_bytes)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def saved_upload(source: BinaryIO, filename: str | None, max_bytes: int, max_seconds: float) -> Iterator[Path]:
    """The upload copied into a fresh temporary folder (only its suffix kept from the client's name), checked
    against the limits; the folder is removed on exit whatever happened."""
    folder = Path(tempfile.mkdtemp(prefix="embedtool-upload-"))
    try:
        path = folder / f"query{_suffix(filename)}"
        written = 0
        with path.open("wb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(too_large_message(max_bytes))
                out.write(chunk)
        if written == 0:
            raise InputError("The uploaded file is empty.")
        _check_duration(path, max_seconds)
        try:
            yield path
        except InputError as exc:  # name the upload as the client knows it, not the temporary path
            raise InputError(str(exc).replace(str(path), filename or "the upload")) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _suffix(filename: str | None) -> str:
    """The client's file suffix when it is a plain one (the decoders use it as a hint), else none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _check_duration(path: Path, max_seconds: float) -> None:
    """Refuse a file longer than ``max_seconds``: by its declared duration when it declares one, else by decoding
    it, stopping as soon as the decoded audio passes the limit (a webm from a browser's recorder declares none,
    and a small file can hold hours)."""
    from embedtool.audio.decode import stream_audio

    limit = int(max_seconds * CHECK_RATE)
    decoded = 0
    try:
        with stream_audio(path, CHECK_RATE) as stream:
            declared = stream.info.duration_s
            if declared <= max_seconds:
                for block in stream:
                    decoded += len(block)
                    if decoded > limit:
                        break
    except Exception as exc:  # decoders raise many types for corrupt input; the details go to the log
        log.info("unreadable upload: %s", str(exc).replace(str(path), "upload"))
        raise InputError(UNREADABLE) from None
    seconds = max(declared, decoded / CHECK_RATE)
    if seconds > max_seconds:
        shown = f"{seconds:.0f} s long" if decoded <= limit else f"longer than {max_seconds:g} s"
        raise UploadTooLarge(f"The upload is {shown}; the server's limit is {max_seconds:g} s.")
