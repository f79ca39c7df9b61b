"""The tutorials in ``notebooks/`` (one per core seed paper): each runs top to bottom in a real
kernel with its quick parameters, and ends by checking the paper's claims against what it
measured."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TUTORIALS = sorted(NOTEBOOKS.glob("*.ipynb"))


def _outputs_text(notebook) -> str:
    return "".join(out.get("text", "") + out.get("data", {}).get("text/plain", "")
                   for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs)


def test_every_tutorial_has_a_domain_a_parameters_cell_and_no_saved_outputs():
    from adaptlab.plugins.registry import discover_domains

    assert TUTORIALS, "notebooks/ holds no tutorial"
    domains = discover_domains().domains
    for path in TUTORIALS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["adaptlab"]["domain"] in domains, path.name
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "QUICK = False" in tagged[0].source, path.name
        assert notebook.cells[0].cell_type == "markdown" and "claims" in notebook.cells[0].source
        assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_with_its_quick_parameters(path, tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("QUICK = False", "QUICK = True")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _outputs_text(notebook)
    verdicts = [line for line in text.splitlines() if line.startswith("Claim")]
    # Every claim gets a verdict with its numbers (at quick settings either way is possible).
    assert verdicts and all(re.search(r"\d.*: (agrees|does not agree)\.$", line.rstrip())
                            for line in verdicts), text[-2000:]
    images = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images, "the tutorial drew nothing"
