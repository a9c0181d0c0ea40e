"""The latest ``evaluate`` report as a web page: its ``report.md`` rendered to HTML, its figures beside it."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

# An image of the report is one of its own files (``map.png``): nothing with a scheme, a host or a folder.
LOCAL_FILE = re.compile(r"[\w.-]+")


def render_report(folder: Path) -> str:
    """The report folder's Markdown as a standalone HTML page. Images stay relative (``map.png``), so the page
    must be served from a URL whose folder serves the report's files; an image naming anything else is shown as
    its text. Raw HTML in the Markdown is escaped (the report escapes the Markdown of labels and names itself)."""
    from markdown_it import MarkdownIt  # a dependency of rich, hence always installed

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules.get("image")

    def image(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
        src = tokens[idx].attrGet("src") or ""
        if not LOCAL_FILE.fullmatch(src) or default_image is None:
            return html.escape(f"[image {src}]")
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    body = md.render((folder / "report.md").read_text())
    title = html.escape(f"embedtool report {folder.name}")
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        "<link rel='stylesheet' href='/static/report.css'></head>"
        f"<body><nav><a href='/'>&larr; embedtool</a></nav>{body}</body></html>"
    )
