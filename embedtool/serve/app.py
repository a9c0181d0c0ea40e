"""The ASGI app: the JSON API over :class:`~embedtool.serve.library.Library`, the page, audio and the report.

Every error a client can cause is a 4xx JSON answer ``{"error": message}``: an unknown track or file 404, a
missing artefact 409 (the message names the command that makes it), unusable input 422, an oversize upload 413.
Anything else is a 500 with a one-line message, never a traceback.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from embedtool import __version__
from embedtool.errors import ConfigError, EmbedtoolError, IncompatibleArtefactError, MissingArtefactError
from embedtool.serve.library import Library, NotFound, require_nonempty
from embedtool.serve.media import RangeNotSatisfiable, WavTranscode, is_playable, media_type, parse_range
from embedtool.serve.report import render_report
from embedtool.serve.uploads import BodyLimit, UploadTooLarge, saved_upload
from embedtool.workspace import Workspace

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 50 * 1000 * 1000
MAX_UPLOAD_SECONDS = 15 * 60.0
TOKEN_COOKIE = "embedtool_token"
log = logging.getLogger("embedtool.serve")
Mode = Literal["similar", "identify"]  # module level: FastAPI resolves the annotations by name

STATUS = {NotFound: 404, UploadTooLarge: 413, MissingArtefactError: 409, IncompatibleArtefactError: 409,
          ConfigError: 400}  # fmt: skip


def create_app(
    workspace: Workspace | Path | str,
    *,
    token: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_upload_seconds: float = MAX_UPLOAD_SECONDS,
) -> FastAPI:
    """The web app over ``workspace``, its artefacts opened now (once). With ``token``, every request must carry
    it: ``Authorization: Bearer TOKEN``, ``?token=TOKEN`` (which also sets a cookie for the page's audio), or
    that cookie."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.at(workspace)
    library = Library(ws)
    app = FastAPI(
        title="embedtool",
        version=__version__,
        description="Search, listen to and browse an embedtool workspace. The page at / uses this same API.",
    )
    app.state.library = library
    _errors(app)
    _api(app, library, max_upload_bytes, max_upload_seconds)
    _pages(app, library)
    if token:
        _require_token(app, token)
    # Outermost: an oversize body is refused before anything reads it.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + 64 * 1024)  # multipart framing on top of the file
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(EmbedtoolError)
    async def embedtool_error(request: Request, exc: EmbedtoolError) -> JSONResponse:
        status = next((s for kind, s in STATUS.items() if isinstance(exc, kind)), 422)
        return _error(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

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
        return library.status()

    @app.get("/api/tracks", summary="Library tracks whose id, name or path contains every word of q")
    def tracks(q: str = "", limit: int = Query(50, ge=1, le=200)) -> dict:
        found = library.find_tracks(q, limit)
        return {"query": q, "count": len(found), "tracks": found}

    @app.get("/api/tracks/{track_id}", summary="One library track")
    def track(track_id: str) -> dict:
        return {k: v for k, v in library.track(track_id).items() if not k.startswith("_")}

    @app.get("/api/search", summary="Tracks similar to a library track, or the track it is (identify)")
    def search_track(track: str = "", mode: Mode = "similar", k: int = Query(10, ge=1, le=100)) -> dict:
        return library.search_track(require_nonempty(track, "query: give a track id (track=...)"), mode, k)

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

    @app.get("/api/audio/{track_id}", summary="A library track's audio (HTTP range requests)")
    def audio(track_id: str, request: Request) -> Response:
        path = library.audio_file(track_id)
        if is_playable(path):
            return FileResponse(path, media_type=media_type(path))  # answers Range requests itself
        return _transcoded(path, request.headers.get("range"))


def _transcoded(path: Path, range_header: str | None) -> Response:
    """A file the browser cannot play, as a WAV; only the requested byte range is decoded."""
    try:
        wav = WavTranscode.open(path)
    except Exception as exc:  # decoders raise many types for unreadable input
        raise NotFound(f"The track's audio cannot be decoded ({type(exc).__name__}).") from None
    try:
        span = parse_range(range_header, wav.size)
    except RangeNotSatisfiable as exc:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{exc.size}"})
    headers = {"Accept-Ranges": "bytes"}
    if span is None:
        return Response(wav.read(0, wav.size), media_type="audio/wav", headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{wav.size}"
    return Response(wav.read(start, end), status_code=206, media_type="audio/wav", headers=headers)


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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _require_token(app: FastAPI, token: str) -> None:
    @app.middleware("http")
    async def check(request: Request, call_next):  # type: ignore[no-untyped-def]
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _error(401, "This server needs a token: open the address it printed, with ?token=...")
        response = await call_next(request)
        if request.query_params.get("token"):  # the page's <audio> and <img> requests then carry it
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response
