"""The wildlife template in a real JupyterLab, driven by a real browser (Debian's Chromium
through Playwright): Run All renders the setup panel and the training view, training
finishes, the live curves show; a screenshot goes into the test output."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.plugins.registry import get_domain
from adaptlab.templates import build_template
from lab_browser import (
    CHROMIUM,
    OUTPUT,
    TOKEN,
    chromium_page,
    jupyter_lab,
    run_all_until_panel,
    wait_accepting_dialogs,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")]


def _write_notebook(root: Path) -> Path:
    import nbformat

    notebook = build_template(get_domain("wildlife"), parameters={
        "QUICK": True, "SETTINGS": {"image_size": 96, "device": "cpu"}})
    path = root / "wildlife.ipynb"
    nbformat.write(notebook, path)
    return path


def test_wildlife_template_runs_all_in_jupyterlab(tmp_path):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "notebook-wildlife-template.png"
    dialogs: list[str] = []
    with jupyter_lab(tmp_path) as (url, root), chromium_page(tmp_path) as page:
        _write_notebook(root)
        page.goto(f"{url}/lab/tree/wildlife.ipynb?reset&token={TOKEN}")
        run_all_until_panel(page, url, "wildlife.ipynb", dialogs, 120,
                            OUTPUT / "notebook-first-run-stalled.png")
        prompts = page.locator(".jp-InputPrompt", has_text="[")
        view = page.locator(".adaptlab-training-view").first
        view.wait_for(timeout=120_000)
        # Training is done when the saved record under the view shows the headline.
        wait_accepting_dialogs(page, page.locator(".adaptlab-record", has_text="held-out"),
                               dialogs, 400)
        curves = page.locator("img.adaptlab-curves").first
        curves.scroll_into_view_if_needed()
        drawn = curves.evaluate("img => img.complete && img.naturalWidth > 0")
        bar_done = view.locator(".progress-bar-success").count()
        buttons = view.locator("button").all_inner_texts()
        page.screenshot(path=str(shot))
        # Run All goes on past training: the comparison and the report render too.
        wait_accepting_dialogs(page, page.locator("iframe.adaptlab-report"), dialogs, 300,
                               state="attached")
        compared = page.locator(".adaptlab-comparison-view img.adaptlab-tradeoff").count()
        errors = page.get_by_text("Error displaying widget").count()
        assert prompts.count() >= 4
    print(f"screenshot: {shot}; dialogs accepted: {dialogs}")
    assert not [d for d in dialogs if "died" in d or "rror" in d], dialogs
    assert drawn, "the live curves did not render"
    assert bar_done == 1, "the progress bar did not reach the end"
    assert [b.strip() for b in buttons][:3] == ["Train", "Stop", "Resume"]
    assert errors == 0 and compared == 1
    assert list((root / "runs").glob("*/metrics.json"))
