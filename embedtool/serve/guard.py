"""What every request passes before the app sees it (an ASGI middleware, :class:`Guard`):

- the ``Host`` header must name this server: a localhost name, the address it is bound to, or one allowed with
  ``--allow-host`` (a web page elsewhere that re-binds its DNS name to 127.0.0.1 cannot read the library);
- a POST must come from the page itself: an ``Origin`` (or ``Sec-Fetch-Site``) of another site is refused;
- with a token, the request must carry it (``Authorization: Bearer``, the HttpOnly cookie, or ``?token=``, which
  is exchanged for the cookie by a redirect to the same address without it, so it stays out of the history);
- every answer carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a Content-Security-Policy
  that allows only the server's own scripts, styles and media, in no frame.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_COOKIE = "embedtool_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(value: str) -> str:
    """The name of a ``Host`` header or URL authority without its port, lower case (``[::1]:80`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_names(bound: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a server answers to: localhost names, the address it is bound to, and ``extra``."""
    names = set(LOCAL_NAMES)
    if bound and bound not in ("0.0.0.0", "::"):  # a wildcard address is no name: --allow-host names them
        names.add(host_name(bound))
    names.update(host_name(h) for h in extra if h.strip())
    return frozenset(names)


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (the token itself never sits in the browser's cookie jar)."""
    return hashlib.sha256(b"embedtool-serve:" + token.encode()).hexdigest()


class Guard:
    """The checks above, in front of ``app``; ``hosts`` None or containing ``*`` accepts any Host."""

    def __init__(self, app: Any, hosts: Iterable[str] | None = None, token: str | None = None):
        self.app = app
        names = None if hosts is None else frozenset(host_name(h) for h in hosts)
        self.hosts = None if names is None or "*" in names else names
        self.token = token
        self.cookie = cookie_value(token) if token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(secured, *refusal)
            return
        await self.app(scope, receive, secured)

    def _refusal(self, scope: dict) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return (
                400,
                (
                    f"This server does not answer to the host name {host_name(host)!r}: open it by the address it "
                    "printed (or start it with --allow-host NAME)."
                ),
                [],
            )
        if scope.get("method", "GET") not in SAFE_METHODS and not _same_origin(headers, host):
            return 403, "Cross-site requests are refused: use the server's own page or a client without Origin.", []
        if self.token is None:
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given_query = next((v for k, v in query if k == "token"), None)
        auth = headers.get("authorization", "")
        ok = False
        if auth.lower().startswith("bearer "):
            ok = hmac.compare_digest(auth[7:].strip().encode(), self.token.encode())
        elif given_query is not None:
            ok = hmac.compare_digest(given_query.encode(), self.token.encode())
        else:
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed Cookie header is no token
                pass
            given = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else ""
            ok = self.cookie is not None and hmac.compare_digest(given.encode(), self.cookie.encode())
        if not ok:
            return 401, "This server needs a token: open the address it printed (with ?token=...).", []
        if given_query is not None and scope.get("method") in ("GET", "HEAD"):
            # the token is exchanged for the cookie, and the address bar loses it
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
            set_cookie = f"{TOKEN_COOKIE}={self.cookie}; HttpOnly; SameSite=Strict; Path=/"
            return 303, "", [(b"location", location.encode()), (b"set-cookie", set_cookie.encode())]
        return None


def _same_origin(headers: dict[str, str], host: str) -> bool:
    """A state-changing request is the page's own: its ``Origin``, when sent, is this server (scheme aside), and
    the browser does not call it cross-site. Clients that send neither (curl, scripts) are not browsers."""
    if headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return origin != "null" and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


async def _answer(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": message}).encode() if status != 303 else b""
    head = [(b"content-type", b"application/json")] if body else []
    head += [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
