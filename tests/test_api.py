"""The public API: every exported name resolves, and importing the package does not load torch."""

from __future__ import annotations

import subprocess
import sys

import embedtool


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    for name in embedtool.__all__:
        value = getattr(embedtool, name)
        assert value is not None, name
        if name != "__version__":
            module = embedtool._EXPORTS[name]
            assert getattr(sys.modules[module], name) is value


def test_importing_the_package_stays_cheap() -> None:
    code = "import sys, embedtool; w = embedtool.Workspace; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_unknown_names_raise_attribute_error() -> None:
    try:
        embedtool.no_such_stage  # noqa: B018
    except AttributeError as exc:
        assert "no_such_stage" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
