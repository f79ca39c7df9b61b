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


# One domain goes through papermill (parameters injected the way papermill users pass them),
# the others through nbclient with the parameters cell edited: both headless paths.
PAPERMILL = "medical"


def _execute(domain: str, folder) -> object:
    import nbformat

    from adaptlab.templates import build_template

    notebook = build_template(discover_domains().domains[domain])
    if domain == PAPERMILL:
        import papermill

        source = folder / "template.ipynb"
        nbformat.write(notebook, source)
        return papermill.execute_notebook(str(source), str(folder / "executed.ipynb"),
                                          parameters={"QUICK": True}, cwd=str(folder),
                                          kernel_name="python3", progress_bar=False)
    from nbclient import NotebookClient

    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("QUICK = False", "QUICK = True")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_template_runs_headless_and_keeps_its_outputs(domain, tmp_path):
    """Setup panel, training view, comparison and report, top to bottom on the embedded
    demo; the saved outputs (not widget state) hold the curves, metrics, costs and report."""
    import nbformat

    notebook = nbformat.from_dict(_execute(domain, tmp_path))
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") + out.get("data", {}).get("text/plain", "")
                   for out in outputs)
    pages = [out.get("data", {}).get("text/html", "") for out in outputs]
    assert "held-out" in text and "trainable parameters" in text and "report:" in text
    views = [out["data"]["text/plain"] for out in outputs
             if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert [v.split("(")[0] for v in views] == ["SetupPanel", "TrainingView", "ComparisonView"]
    curves = [p for p in pages if "adaptlab-record-curves" in p]
    assert len(curves) == 1 and "data:image/png;base64," in curves[0]
    assert "finished: epoch 1/1" in text
    assert sum('<iframe class="adaptlab-report"' in p for p in pages) == 1  # report, saved
    # The Predict section: the run's test split predicted, table and drawings saved.
    saved = [p for p in pages if "adaptlab-predictions" in p]
    assert len(saved) == 1 and "<table" in saved[0]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    assert (runs[0] / "report" / "index.html").is_file()
    assert (runs[0] / "predictions" / "test.csv").is_file()
    nbformat.validate(notebook)
