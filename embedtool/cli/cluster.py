"""`embedtool cluster`: k-Means clusters of the embeddings, with exemplars, label agreement and a map."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    JSON_FORMAT,
    TableFormat,
    app_context,
    console,
    format_option,
    handle_errors,
    make_progress,
    print_json,
    stage_progress,
    write_table_rows,
)
from embedtool.cli.flags import Flags, takes

# --format csv/tsv: one row per clustered item; `track` is the name tables print (accepted back by every command).
CSV_COLUMNS = ("track", "track_id", "path", "label", "group", "cluster", "distance", "start_s", "end_s", "item_id")


@app.command(epilog="Example: `embedtool cluster -k auto --k-max 12 --format csv > clusters.csv`")
@handle_errors
@takes("cluster")
def cluster(
    ctx: typer.Context,
    output: TableFormat = format_option("table: clusters and exemplars; csv/tsv: one row per track (or segment)."),
    as_json: bool = JSON_FORMAT,
    *,
    flags: Flags,
) -> None:
    """Group the library into k-Means clusters; writes assignments, centroids, exemplars and map.png."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = flags.settings(actx.config, "cluster")
    ws = actx.workspace
    output = "json" if as_json else output
    with make_progress(actx.quiet or output != "table") as progress:
        result = pipeline.cluster(ws, options, stage_progress(progress))
    from embedtool.features.naming import library_roots, relative_path

    roots = library_roots(ws.features)
    if output in ("csv", "tsv"):
        rows = ({**item, "track": relative_path(item.get("path"), roots) or item["track_id"]} for item in result.items)
        write_table_rows(output, CSV_COLUMNS, rows)
        return
    if output == "json":
        print_json(
            {
                "directory": str(result.directory),
                "k": result.k,
                "criterion": result.clustering.criterion,
                "k_scores": {str(key): v for key, v in result.clustering.k_scores.items()},
                "level": result.level,
                "sizes": result.sizes,
                "exemplars": {str(c): e for c, e in result.exemplars.items()},
                "labels": result.agreement,
                "figures": result.figures,
            }
        )
        return
    how = "chosen by silhouette" if result.clustering.criterion == "silhouette" else "fixed"
    console.print(f"[bold]{result.k} clusters[/] of {len(result.items)} {result.level}s ({how})")
    if result.clustering.k_scores:
        console.print(
            "silhouette by k: " + ", ".join(f"{key}: {v:.3f}" for key, v in sorted(result.clustering.k_scores.items()))
        )
    table = Table("cluster", "size", "exemplars (nearest the centroid)")
    for c, size in enumerate(result.sizes):
        ex = result.exemplars.get(c, [])
        table.add_row(
            str(c),
            str(size),
            "\n".join(
                f"{_short(relative_path(e['path'], roots) or e['track_id'])} [{e['start_s']:.1f}-{e['end_s']:.1f} s]"
                + (f" ({e['label']})" if e.get("label") else "")
                for e in ex
            ),
        )
    console.print(table)
    agreement = result.agreement
    if agreement:
        console.print(
            f"agreement with labels ({agreement['labelled_items']} labelled): purity {agreement['purity']:.3f}, "
            f"NMI {agreement['nmi']:.3f}, ARI {agreement['ari']:.3f}"
        )
        labels = agreement["labels"]
        make_up = Table("cluster", *labels, title="label make-up")
        for c, counts in agreement["composition"].items():
            make_up.add_row(c, *[str(counts.get(lab, 0)) for lab in labels])
        console.print(make_up)
    console.print(
        f"written to {result.directory}" + (f" (map: {result.figures['map']})" if "map" in result.figures else "")
    )


def _short(path: str, width: int = 48) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]
