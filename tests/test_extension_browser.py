"""The JupyterLab extension in a real ``jupyter lab`` driven by Debian's Chromium: the
launcher's "Domain adaptation" section shows one card per installed domain, each followed
by its tutorials; the wildlife card writes its template and opens it; after a short run the
runs panel lists the run, its report opens in a tab and its notebook button leads back; the
dark theme applies to the panel. Screenshots go into the test output."""

from __future__ import annotations

import json
import re
import urllib.request

import nbformat
import pytest

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

# New notebooks start quick (one short epoch, small images): set as an administrator sets
# defaults, through the extension's settings.
SETTINGS = {"@adaptlab/jupyterlab:plugin": {"parameters": {
    "QUICK": True, "SETTINGS": {"image_size": 96, "device": "cpu"}, "EXPLAIN_SAMPLES": 2}}}


def _luminance(css_colour: str, opaque: bool = True) -> float:
    values = [float(v) for v in re.findall(r"[\d.]+", css_colour)]
    assert not opaque or len(values) == 3 or values[3] == 1, f"{css_colour} is not opaque"
    red, green, blue = values[:3]
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_launcher_card_notebook_run_panel_and_report(tmp_path):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    with jupyter_lab(tmp_path, SETTINGS, ("--LabApp.expose_app_in_browser=True",)) as (
            url, root), chromium_page(tmp_path) as page:
        installed = json.load(urllib.request.urlopen(
            f"{url}/adaptlab/domains?token={TOKEN}"))["domains"]
        tutorials = json.load(urllib.request.urlopen(
            f"{url}/adaptlab/tutorials?token={TOKEN}"))["tutorials"]
        page.goto(f"{url}/lab?reset&token={TOKEN}")
        section = page.locator(".jp-Launcher-section").filter(
            has=page.locator(".jp-Launcher-sectionTitle", has_text="Domain adaptation"))
        section.first.wait_for(timeout=60_000)
        cards = section.locator(".jp-LauncherCard")
        labels = [" ".join(t.split()) for t in cards.locator(".jp-LauncherCard-label")
                  .all_inner_texts()]
        icons = cards.locator(".jp-LauncherCard-icon svg").count()
        page.screenshot(path=str(OUTPUT / "extension-launcher.png"))

        cards.filter(has_text="Wildlife images").first.click()
        page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
        page.locator(".lm-TabBar-tab.lm-mod-current",
                     has_text="wildlife.ipynb").first.wait_for(timeout=30_000)
        written = nbformat.read(root / "wildlife.ipynb", as_version=4)

        run_all_until_panel(page, url, "wildlife.ipynb", dialogs, 240,
                            OUTPUT / "extension-first-run-stalled.png")
        wait_accepting_dialogs(page, page.locator("iframe.adaptlab-report"), dialogs, 600,
                               state="attached")

        runs_tab = page.locator(".jp-SideBar .lm-TabBar-tab[title='Adaptation runs']").first
        runs_tab.click()
        panel = page.locator("#adaptlab-runs")
        panel.locator(".jp-adaptlab-RunsPanel-refresh").click()
        row = panel.locator(".jp-adaptlab-Run").first
        row.wait_for(timeout=30_000)
        row_text = " ".join(row.inner_text().split())
        options_line = row.locator(".jp-adaptlab-Run-options")
        options_title = options_line.get_attribute("title")
        options_box = options_line.evaluate(
            "n => [n.clientHeight, parseFloat(getComputedStyle(n).lineHeight) || "
            "parseFloat(getComputedStyle(n).fontSize) * 1.6, n.scrollWidth, n.clientWidth]")
        row.locator(".jp-adaptlab-Run-report").click()
        tab = page.locator(".lm-TabBar-tab.lm-mod-current", has_text="Report:")
        tab.first.wait_for(timeout=30_000)
        report = page.frame_locator(".jp-adaptlab-Report iframe").first
        report.locator("h1").first.wait_for(timeout=30_000)
        report_title = report.locator("h1").first.inner_text()
        report_images = report.locator("img").count()
        page.screenshot(path=str(OUTPUT / "extension-runs-report.png"))

        row.locator(".jp-adaptlab-Run-notebook").click()
        page.locator(".lm-TabBar-tab.lm-mod-current",
                     has_text="wildlife.ipynb").first.wait_for(timeout=30_000)

        light = panel.evaluate("n => getComputedStyle(n).backgroundColor")
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                      "{theme: 'JupyterLab Dark'})")
        page.wait_for_function(
            "() => document.body.dataset.jpThemeName === 'JupyterLab Dark'", timeout=30_000)
        # Headless Chromium left parts of the page painted in the old theme (the computed
        # colours were already dark); a reload draws everything in the saved theme.
        page.reload()
        runs_tab.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        if not panel.is_visible():
            runs_tab.click()
        panel.locator(".jp-adaptlab-Run").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        dark = panel.evaluate("n => getComputedStyle(n).backgroundColor")
        dark_text = panel.locator(".jp-adaptlab-Run-name").first.evaluate(
            "n => getComputedStyle(n).color")
        page.screenshot(path=str(OUTPUT / "extension-runs-dark.png"))

    print(f"dialogs accepted: {dialogs}; row: {row_text}; panel {light} -> {dark}, "
          f"text {dark_text}")
    assert not [d for d in dialogs if "died" in d or "rror" in d], dialogs
    # Each domain's card, then its tutorials (one per seed paper), by name: the launcher's
    # localeCompare ignores case ("eP-ALM" before "SlimFit").
    titles = []
    for domain in installed:
        titles += [domain["title"], *sorted((f"{t['paper']} tutorial" for t in tutorials
                                             if t["domain"] == domain["name"]), key=str.casefold)]
    assert len(installed) >= 4 and tutorials and labels == titles, (labels, titles)
    assert icons == len(titles)
    assert written.metadata["adaptlab"]["domain"] == "wildlife"
    parameters = next(c for c in written.cells if "parameters" in c.metadata.get("tags", []))
    assert "QUICK = True" in parameters.source  # the settings' starting values
    metrics = json.loads(next((root / "runs").glob("*/metrics.json")).read_text())
    assert "wildlife-head" in row_text and "finished" in row_text
    assert f"{metrics['monitor']} {metrics['final']['test'][metrics['monitor']]:.3f}" in row_text
    assert "trainable" in row_text and "MiB" in row_text
    # every option the run recorded is in the options line's tooltip, one per line, and the
    # line itself stays one line high however many there are
    recorded = json.loads(next((root / "runs").glob("*/config.json")).read_text())
    assert len(recorded["strategy_options"]) >= 5
    assert sorted(line.split("=")[0] for line in options_title.split("\n")) \
        == sorted(recorded["strategy_options"]), options_title
    height, line_height, full_width, shown_width = options_box
    assert height < 1.5 * line_height and full_width > shown_width, options_box
    assert "report" in report_title.lower() and report_images >= 2
    assert _luminance(light) > 0.8 and _luminance(dark) < 0.3 < _luminance(dark_text, opaque=False)
