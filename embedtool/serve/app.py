"""The ASGI app: the JSON API over :class:`~embedtool.serve.library.Library`, the page, audio and the report.

Every error is a JSON answer ``{"error": message}``: an unknown track, file or route 404, a missing artefact 409
(the message names the command that makes it), unusable input 422, an oversize upload 413, a foreign Host 400, a
cross-site POST 403, a missing token 401 (:mod:`embedtool.serve.guard`). Anything else is a 500 with a one-line
message, never a traceback.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedtool import __version__
from embedtool.errors import (
    ConfigError,
    EmbedtoolError,
    IncompatibleArtefactError,
    InputError,
    MissingArtefactError,
)
from embedtool.serve.guard import Guard, allowed_names
from embedtool.serve.library import EXPORT_COLUMNS, Library, NotFound, require_nonempty
from embedtool.serve.media import RangeNotSatisfiable, WavTranscode, is_playable, media_type, parse_range
from embedtool.serve.report import render_report
from embedtool.serve.uploads import BodyLimit, UploadTooLarge, saved_upload
from embedtool.workspace import Workspace

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1000 * 1000
MAX_UPLOAD_SECONDS = 15 * 60.0
log = logging.getLogger("embedtool.serve")
Mode = Literal["similar", "identify"]  # module level: FastAPI resolves the annotations by name
Combine = Literal["mean", "rrf"]
MAX_SEEDS = 50  # track= values of one search: each is a query of its own (rrf) or embedded (mean)

STATUS = {NotFound: 404, UploadTooLarge: 413, MissingArtefactError: 409, IncompatibleArtefactError: 409,
          ConfigError: 400}  # fmt: skip


def create_app(
    workspace: Workspace | Path | str,
    *,
    token: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_upload_seconds: float = MAX_UPLOAD_SECONDS,
    hosts: Iterable[str] | None = None,
) -> FastAPI:
    """The web app over ``workspace``, its artefacts opened now (once).

    ``hosts``: the host names the ``Host`` header may give (default: the localhost names; ``["*"]``: any). With
    ``token``, every request must carry it: ``Authorization: Bearer TOKEN``, the HttpOnly cookie the page gets,
    or ``?token=TOKEN`` (answered by a redirect to the same address without it, setting that cookie)."""
    if token is not None and not token.strip():
        raise ConfigError("An empty token would let anyone in: give a token, or none.")
    ws = workspace if isinstance(workspace, Workspace) else Workspace.at(workspace)
    library = Library(ws)
    app = FastAPI(
        title="embedtool",
        version=__version__,
        description="Search, listen to and browse an embedtool workspace. The page at / uses this same API.",
        docs_url=None,  # /docs is a plain page made here: FastAPI's loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.library = library
    _errors(app)
    _api(app, library, max_upload_bytes, max_upload_seconds)
    _pages(app, library)
    # Inner to outer: an oversize body is refused before anything reads it; the guard comes before all.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + 64 * 1024)  # multipart framing on top of the file
    app.add_middleware(Guard, hosts=allowed_names() if hosts is None else hosts, token=token)
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(EmbedtoolError)
    async def embedtool_error(request: Request, exc: EmbedtoolError) -> JSONResponse:
        status = next((s for kind, s in STATUS.items() if isinstance(exc, kind)), 422)
        return _error(status, str(exc))

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException, and the router's 404 and 405
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No such page or API route: {request.url.path} (the API is listed at /docs)."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path} (the API is listed at /docs)."
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "Invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s", request.url.path)
        return _error(500, f"Internal error ({type(exc).__name__}); the server log has the details.")


def _api(app: FastAPI, library: Library, max_bytes: int, max_seconds: float) -> None:
    @app.get("/api/status", summary="What the workspace offers (search, classify, clusters, report)")
    def status() -> dict:
        return {**library.status(), "export_columns": list(EXPORT_COLUMNS)}

    @app.get("/api/tracks", summary="Library tracks whose id, name or path contains every word of q")
    def tracks(q: str = "", limit: int = Query(50, ge=1, le=200)) -> dict:
        found = library.find_tracks(q, limit)
        return {"query": q, "count": len(found), "tracks": found}

    @app.get("/api/tracks/{track_id}", summary="One library track")
    def track(track_id: str) -> dict:
        return {k: v for k, v in library.track(track_id).items() if not k.startswith("_")}

    @app.get(
        "/api/search",
        summary="Tracks similar to a library track, or the track it is (identify); with several track=, tracks "
        "like all of them together (combine=mean or rrf), the seeds left out",
    )
    def search_track(
        track: list[str] = Query([]),
        mode: Mode = "similar",
        k: int = Query(10, ge=1, le=100),
        combine: Combine | None = None,
    ) -> dict:
        ids = [require_nonempty(t, "query: give a track id (track=...)") for t in track or [""]]
        if len(ids) > MAX_SEEDS:
            raise InputError(f"At most {MAX_SEEDS} seeds (track=...) in one search, not {len(ids)}.")
        if len(ids) == 1 and combine is None:
            return library.search_track(ids[0], mode, k)
        return library.search_seeds(list(dict.fromkeys(ids)), mode, k, combine)

    @app.post("/api/search", summary="Tracks similar to an uploaded audio file, or the track it is from")
    def search_upload(file: UploadFile = File(...), mode: Mode = "similar", k: int = Query(10, ge=1, le=100)) -> dict:
        with saved_upload(file.file, file.filename, max_bytes, max_seconds) as path:
            return library.search_file(path, mode, k)

    @app.post("/api/classify", summary="The label the workspace's classifier gives an uploaded file")
    def classify(file: UploadFile = File(...)) -> dict:
        with saved_upload(file.file, file.filename, max_bytes, max_seconds) as path:
            return library.classify_file(path)

    @app.get("/api/map", summary="The library's tracks on a 2-D map, with labels and clusters")
    def map_() -> dict:
        return library.map()

    @app.get("/api/clusters", summary="The clusters made by `embedtool cluster`: sizes, labels, exemplars")
    def clusters() -> dict:
        return library.clusters()

    @app.get("/api/duplicates", summary="Exact copies, near-copies and shared material in the library, grouped")
    def duplicates() -> dict:
        return library.duplicates()

    @app.get("/api/envelope/{track_id}", summary="A track's loudness over time (0..1 in `bins` steps), for a timeline")
    def envelope(track_id: str, bins: int = Query(200, ge=10, le=2000)) -> dict:
        return library.envelope(track_id, bins)

    @app.get("/api/audio/{track_id}", summary="A library track's audio (HTTP range requests)")
    def audio(track_id: str, request: Request) -> Response:
        path = library.audio_file(track_id)
        if is_playable(path):
            refused = _unsatisfiable(request.headers.get("range"), path.stat().st_size)
            # FileResponse answers Range requests itself (its refusals are plain text: made JSON above)
            return refused or FileResponse(path, media_type=media_type(path))
        return _transcoded(path, request.headers.get("range"))


def _unsatisfiable(range_header: str | None, size: int) -> JSONResponse | None:
    """The JSON refusal of a Range header that is malformed (400) or outside the resource (416), else None."""
    if not range_header:
        return None
    try:
        if parse_range(range_header, size) is None:
            return _error(400, f"Malformed Range header {range_header[:60]!r}: give bytes=START-END.")
    except RangeNotSatisfiable:
        answer = _error(416, f"The range {range_header[:60]!r} is outside the audio's {size} bytes.")
        answer.headers["Content-Range"] = f"bytes */{size}"
        return answer
    return None


def _transcoded(path: Path, range_header: str | None) -> Response:
    """A file the browser cannot play, as a WAV; only the requested byte range is decoded, as it is sent."""
    try:
        wav = WavTranscode.open(path)
    except Exception as exc:  # decoders raise many types for unreadable input
        log.info("cannot transcode %s: %s: %s", path, type(exc).__name__, exc)
        raise NotFound(
            "The track's audio cannot be played: its file is damaged, or in a format the decoder cannot read."
        ) from None
    refused = _unsatisfiable(range_header, wav.size)
    if refused is not None:
        return refused
    span = parse_range(range_header, wav.size)
    start, end = span or (0, wav.size)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{wav.size}"
    # decoded piece by piece as it is sent (a whole 10-minute aiff for `Range: bytes=0-` is never in memory)
    body = wav.stream(start, end)
    return StreamingResponse(body, status_code=206 if span else 200, media_type="audio/wav", headers=headers)


def _pages(app: FastAPI, library: Library) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/report", include_in_schema=False)
    def report_redirect() -> RedirectResponse:
        return RedirectResponse("/report/")

    @app.get("/report/", response_class=HTMLResponse, summary="The latest evaluate report as a page")
    def report() -> HTMLResponse:
        folder = library.latest_report()
        if folder is None:
            raise NotFound("No evaluate report yet (make one with `embedtool evaluate`).")
        return HTMLResponse(render_report(folder))

    @app.get("/report/{name}", include_in_schema=False)
    def report_file(name: str) -> FileResponse:
        return FileResponse(library.report_file(name))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _docs_page(spec: dict) -> str:
    """The API as one plain page made from its OpenAPI description (no scripts, nothing from the internet)."""
    e = html.escape
    rows = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            query = [p for p in op.get("parameters", []) if p.get("in") == "query"]
            params = ", ".join(f"{p['name']}{'' if p.get('required') else '?'}" for p in query)
            body = " multipart file" if "requestBody" in op else ""
            rows.append(
                f"<tr><td><code>{e(method.upper())} {e(path)}</code></td><td>{e(params)}{body}</td>"
                f"<td>{e(op.get('summary', ''))}</td></tr>"
            )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>embedtool API</title>"
        "<link rel='stylesheet' href='/static/report.css'></head><body><nav><a href='/'>&larr; embedtool</a></nav>"
        f"<h1>embedtool API {e(str(spec.get('info', {}).get('version', '')))}</h1>"
        f"<p>{e(spec.get('info', {}).get('description', ''))} Errors are <code>{{&quot;error&quot;: message}}</code>. "
        "The full description: <a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>request</th><th>query parameters</th><th>what it answers</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
