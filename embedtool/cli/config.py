"""`embedtool config`: the effective configuration (presets, embedtool.yaml and defaults), as YAML."""

from __future__ import annotations

import typer
import yaml

from embedtool.cli.app import app
from embedtool.cli.common import app_context, handle_errors
from embedtool.cli.flags import PresetName
from embedtool.config import SECTIONS, section_class, settings_dict


@app.command("config", epilog="Example: `embedtool config --preset thesis > embedtool.yaml`")
@handle_errors
def show_config(
    ctx: typer.Context,
    preset: PresetName | None = typer.Option(None, "--preset", help="Show this preset's values."),
) -> None:
    """Print every option of every stage with its effective value; the output is a valid embedtool.yaml."""
    actx = app_context(ctx, existing=False)
    overrides = {"preset": preset} if preset else {}
    data: dict[str, object] = {"workspace": str(actx.workspace.root)}
    if preset or actx.config.preset:
        data["preset"] = preset or actx.config.preset
    for section in SECTIONS:
        cls_overrides = overrides if hasattr(section_class(section), "from_preset") else {}
        data[section] = settings_dict(actx.config.settings(section, cls_overrides))
    source = str(actx.config.path) if actx.config.path else "no embedtool.yaml: built-in defaults"
    # Plain text, not rich: the output must stay valid YAML whatever the terminal width.
    typer.echo(f"# effective configuration ({source})")
    typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
