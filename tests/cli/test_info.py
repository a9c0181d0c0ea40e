"""`embedtool info` reads every stage as it is, a finished evaluate report included."""

from __future__ import annotations

import json

from factories import run_cli

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions, EvaluateOptions
from embedtool.workspace import Workspace


def test_info_reads_a_finished_report_as_finished(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    options = EvaluateOptions(name="first", robustness=False, untrained_baseline=False, pretrained_baseline="")
    pipeline.evaluate(ws, options, ClassifyOptions(cv=2, plots=False))
    result = run_cli("-w", ws.root, "info", "--json")
    assert result.exit_code == 0, result.output
    report = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "report")
    assert report["exists"] and not report["problem"] and report["summary"]["name"] == "first"
