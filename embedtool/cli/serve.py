"""`embedtool serve`: the local web app (search, listen, map, clusters, classify, report) over the workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from embedtool.cli.app import app
from embedtool.cli.common import app_context, console, err_console, handle_errors
from embedtool.errors import ConfigError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@app.command(epilog="Example: `embedtool serve --port 8080` then open http://127.0.0.1:8080")
@handle_errors
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (others than localhost: a warning)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (1-65535)."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Require this token (a shared machine): open the printed address with it. Safer from "
        "EMBEDTOOL_SERVE_TOKEN or --token-file: a command line is visible to others in `ps`.",
        envvar="EMBEDTOOL_SERVE_TOKEN",
        show_envvar=True,
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Read the token from this file (its first line).", dir_okay=False
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="Also answer to this host name (a name others use to reach this machine; repeatable). Localhost "
        "names and the --host address are always allowed; other Host headers are refused.",
    ),
) -> None:
    """Search, listen to and browse the library in a web page (and its JSON API, listed at /docs)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port: give a number from 1 to 65535.")
    token = _token(token, token_file)
    try:
        import uvicorn

        from embedtool.serve.app import create_app
        from embedtool.serve.guard import allowed_names
    except ImportError as exc:
        raise ConfigError(
            f"embedtool serve needs the web packages ({exc.name} is missing): pip install 'embedtool[serve]'"
        ) from None
    if host not in LOCAL_HOSTS:
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: other machines can reach the library's audio"
            + ("" if token else "; consider --token-file")
        )
        if host in ("0.0.0.0", "::") and not allow_host:
            err_console.print(
                "note: only localhost names are answered; give the names others reach this machine by with "
                "--allow-host NAME (other Host headers are refused, against DNS rebinding)"
            )
    actx = app_context(ctx)
    console.print(f"opening {actx.workspace.root} …")
    web = create_app(actx.workspace, token=token, hosts=allowed_names(host, allow_host))
    shown = "localhost" if host in LOCAL_HOSTS else (f"[{host}]" if ":" in host else host)
    console.print(
        f"embedtool serve: http://{shown}:{port}/" + (f"?token={token}" if token else "") + "  (Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")


def _token(token: str | None, token_file: Path | None) -> str | None:
    """The token from --token / EMBEDTOOL_SERVE_TOKEN or --token-file (not both); an empty one is an error, not
    a server without a token."""
    if token_file is not None:
        if token is not None:
            raise ConfigError("Give the token once: --token (or EMBEDTOOL_SERVE_TOKEN) or --token-file, not both.")
        try:
            lines = token_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: cannot read it ({exc.strerror}).") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty: write the token on its first line.")
    if token is not None and not token.strip():
        raise ConfigError("The token is empty: give a token, or leave --token (and EMBEDTOOL_SERVE_TOKEN) out.")
    return token.strip() if token is not None else None
