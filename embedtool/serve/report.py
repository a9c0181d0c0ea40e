"""The latest ``evaluate`` report as a web page: its ``report.md`` rendered to HTML, its figures beside it."""

from __future__ import annotations

import html
from pathlib import Path

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 3px; }
nav { margin-bottom: 1rem; }
"""


def render_report(folder: Path) -> str:
    """The report folder's Markdown as a standalone HTML page. Images stay relative (``map.png``), so the page
    must be served from a URL whose folder serves the report's files. Raw HTML in the Markdown is escaped."""
    from markdown_it import MarkdownIt  # a dependency of rich, hence always installed

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render((folder / "report.md").read_text())
    title = html.escape(f"embedtool report {folder.name}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>"
        f"<body><nav><a href='/'>&larr; embedtool</a></nav>{body}</body></html>"
    )
