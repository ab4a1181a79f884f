"""examples/data_check.ipynb runs from another folder and gives the outputs committed with it.

The notebook is executed with nbclient (its figures drawn headless by ipykernel's inline Agg
backend) in a temporary folder, so it must find the sample day by itself. Its outputs are then
compared with the committed ones after normalising what may vary between runs: memory
addresses, the repository's own path, blank lines, stderr (warnings, progress bars) and image
bytes (a figure
must be there, its pixels may differ by a font). HTML renderings are left out: they show the
same frames as the plain text.

To refresh the committed outputs after changing the notebook or the library:
    D2D_UPDATE_NOTEBOOK=1 python -m pytest d2d-py/tests/test_notebook.py
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

import d2d

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "examples" / "data_check.ipynb"


def normalised(nb: Any) -> list[str]:
    """Each code cell's source and outputs as text, without what may vary between runs."""
    out: list[str] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        out.append(f"--- cell {i}")
        out.extend(cell.source.splitlines())
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                if o.name == "stdout":
                    out.extend(o.text.splitlines())
            elif o.output_type == "error":
                out.append(f"error: {o.ename}: {o.evalue}")
            else:
                data = o.get("data", {})
                out.extend(data.get("text/plain", "").splitlines())
                out.extend(f"<{kind}>" for kind in sorted(data) if kind.startswith("image/"))
    text = "\n".join(out)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", text)
    text = text.replace(str(REPO), "<repo>")
    # Blank lines come and go with how stream chunks were cut; they carry nothing.
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def test_notebook_runs_elsewhere_and_gives_the_committed_outputs(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("D2D_LANDING", raising=False)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    run = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        run, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    if os.environ.get("D2D_UPDATE_NOTEBOOK"):
        nbformat.write(run, NOTEBOOK)
        committed = run
    want, got = normalised(committed), normalised(run)
    diff = "\n".join(difflib.unified_diff(want, got, "committed", "executed", lineterm=""))
    assert want == got, (
        f"{NOTEBOOK.name}: outputs differ from the committed ones (refresh them with "
        f"D2D_UPDATE_NOTEBOOK=1 if the change is intended):\n{diff}"
    )
    assert any("<image/png>" in line for line in got), "the notebook draws no figure"


def test_committed_notebook_has_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs for c in code[1:]), "commit the notebook with its outputs"
    assert all(c.execution_count is not None for c in code)


def test_notebook_says_where_to_point_it_when_it_finds_no_data(tmp_path: Path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.delenv("D2D_LANDING", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(d2d, "__file__", str(tmp_path / "site-packages" / "d2d" / "__init__.py"))
    setup = next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                 if c.cell_type == "code")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="D2D_LANDING"):
        exec(setup, {})
    monkeypatch.setenv("D2D_LANDING", str(REPO / "testdata" / "landing"))
    namespace: dict[str, Any] = {}
    exec(setup, namespace)
    assert namespace["LANDING"] == REPO / "testdata" / "landing"
