"""Every installed domain's template notebook is valid and runs top to bottom in a real kernel
(nbclient), with its parameters cell set to a quick run."""

from __future__ import annotations

import json

import pytest

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.registry import discover_domains
from conftest import run_cli

DOMAINS = sorted(discover_domains().domains)


def test_template_cli_writes_once(tmp_path, capsys):
    path = tmp_path / "wildlife.ipynb"
    code, stdout, _ = run_cli(["template", "wildlife", "--out", str(path)], capsys)
    assert code == 0 and path.is_file()
    notebook = json.loads(path.read_text())
    tagged = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and 'DOMAIN = "wildlife"' in "".join(tagged[0]["source"])
    code, _, stderr = run_cli(["template", "wildlife", "--out", str(path)], capsys)
    assert code == 2 and "exists" in stderr


def test_bad_template_cell_kind_is_refused():
    from dataclasses import replace

    spec = discover_domains().domains["wildlife"]
    with pytest.raises(AdaptlabError, match="template cell kind 'python'"):
        replace(spec, template_cells=(("python", "print(1)"),)).validate()


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_template_runs_in_a_kernel(domain, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    from adaptlab.templates import build_template

    notebook = build_template(discover_domains().domains[domain])
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("QUICK = False", "QUICK = True")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.outputs)
    assert "held-out" in outputs and "trainable parameters" in outputs
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    assert (runs[0] / "report" / "index.html").is_file() and "report:" in outputs
    shown = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
             if "<iframe srcdoc=" in out.get("data", {}).get("text/html", "")]
    assert len(shown) == 1  # the report saved in the notebook, readable when reopened
    nbformat.validate(notebook)
