"""`embedtool serve`: the local web app (search, listen, map, clusters, classify, report) over the workspace."""

from __future__ import annotations

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
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Require this token (for a shared machine): open the printed address with it.",
        envvar="EMBEDTOOL_SERVE_TOKEN",
    ),  # fmt: skip
) -> None:
    """Search, listen to and browse the library in a web page (and its JSON API, documented at /docs)."""
    try:
        import uvicorn

        from embedtool.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"embedtool serve needs the web packages ({exc.name} is missing): pip install 'embedtool[serve]'"
        ) from None
    if host not in LOCAL_HOSTS:
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: other machines can reach the library's audio"
            + ("" if token else "; consider --token")
        )
    actx = app_context(ctx)
    console.print(f"opening {actx.workspace.root} …")
    web = create_app(actx.workspace, token=token)
    shown = "localhost" if host in LOCAL_HOSTS else host
    console.print(
        f"embedtool serve: http://{shown}:{port}/" + (f"?token={token}" if token else "") + "  (Ctrl-C stops)"
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")
