"""``adaptlab explain RUN_DIR`` on real runs of the demos: the report, the before/after
comparison (peft adapter off and on), and the page in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from adaptlab.cli import main
from conftest import FAST, run_cli

warnings.filterwarnings("ignore", message="unrecognized nn.Module")
OUTPUT = Path(os.environ.get("ADAPTLAB_TEST_OUTPUT", Path(__file__).parent.parent / "test-output"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ONE_EPOCH = [*FAST[:2], "--epochs", "1", *FAST[4:]]


def _run(domain: str, out: Path, *extra: str) -> Path:
    assert main(["run", domain, "--out", str(out), *ONE_EPOCH, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def wildlife_report(tmp_path_factory) -> Path:
    run_dir = _run("wildlife", tmp_path_factory.mktemp("explain") / "run")
    assert main(["explain", str(run_dir), "--samples", "3", "--device", "cpu"]) == 0
    return run_dir


@pytest.mark.slow
def test_explain_writes_a_report_and_attributions_json(wildlife_report):
    data = json.loads((wildlife_report / "report" / "attributions.json").read_text())
    assert data["method"]["used"] == "integrated_gradients"  # the wildlife default
    assert len(data["samples"]) == 3
    first = data["samples"][0]
    assert first["attribution"]["shape"] == [64, 64]  # the run's image size
    stored = first["attribution"]["stored_shape"]  # pooled to at most 56 a side in the JSON
    assert max(stored) <= 56 and len(first["attribution"]["values"]) == stored[0] * stored[1]
    assert {"faithfulness", "infidelity_sensitivity", "randomisation"} <= set(data["checks"])
    # A head-only run leaves the backbone as it was: the unadapted model (pre-trained
    # backbone with the same head) explains every sample the same way.
    assert data["comparison"]["mean_rank_correlation"] > 0.999
    page = (wildlife_report / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 + 3  # gallery, summaries, curves
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_report_opens_in_headless_chromium_with_its_images(wildlife_report, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "explain-report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((wildlife_report / "report" / "index.html").as_uri())
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && "
                               "i.naturalWidth > 0)")
        headings = page.locator("h2").all_inner_texts()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    print(f"screenshot: {shot}")
    assert errors == []
    assert loaded and all(loaded), loaded
    assert {"Attributions", "Checks", "What did adaptation change?", "Environment"} <= set(headings)


@pytest.mark.slow
def test_lora_comparison_switches_the_adapter_off_and_back_on(tmp_path):
    from adaptlab.explain.api import explain
    from adaptlab.run_loading import load_run

    run_dir = _run("wildlife", tmp_path / "lora", "--strategy", "lora", "--set", "lr=0.01")
    loaded = load_run(run_dir, device="cpu")
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = loaded.model(batch)
    result = explain(loaded, "saliency", samples=3, checks=False, report=False)
    with torch.no_grad():
        assert torch.equal(loaded.model(batch), before)  # adapters are on again
    assert result.comparison["mean_rank_correlation"] < 0.999  # the adapter changed the maps
    with loaded.unadapted() as base, torch.no_grad():
        assert not torch.allclose(base(batch), before)


@pytest.mark.slow
def test_code_run_explained_with_token_highlights(tmp_path):
    run_dir = _run("code", tmp_path / "code", "--set", "train_samples=64")
    assert main(["explain", str(run_dir), "--samples", "2", "--no-checks"]) == 0
    data = json.loads((run_dir / "report" / "attributions.json").read_text())
    assert data["method"]["used"] == "layer_integrated_gradients"
    assert data["feature_axes"] == "tokens"
    sample = data["samples"][0]
    assert len(sample["tokens"]) == sample["attribution"]["shape"][0]
    assert "class='tok'" in (run_dir / "report" / "index.html").read_text()


@pytest.mark.slow
def test_forecast_run_explained_over_time_steps(tmp_path):
    run_dir = _run("timeseries", tmp_path / "series", "--set", "train_samples=32",
                   "--set", "batch_size=16")
    assert main(["explain", str(run_dir), "--samples", "1", "--no-compare"]) == 0
    data = json.loads((run_dir / "report" / "attributions.json").read_text())
    assert data["feature_axes"] == "time steps"
    # Closeness to the full forecast, not a raw level (which the code clips to [0, 1] anyway,
    # so a range says nothing): both curves are exactly 1 where the whole input is in, and
    # meet below 1 at the all-baseline input, whose forecast differs.
    curves = data["checks"]["faithfulness"]["curves"]
    deletion, insertion = curves["deletion"], curves["insertion"]
    assert deletion[0] == pytest.approx(1.0, abs=1e-6)
    assert insertion[-1] == pytest.approx(1.0, abs=1e-6)
    assert deletion[-1] == pytest.approx(insertion[0], abs=1e-6) and insertion[0] < 0.999


def test_explain_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    code, _, err = run_cli(["explain", str(tmp_path)], capsys)
    assert code == 2 and "not a finished run (config.json missing)" in err
    code, _, err = run_cli(["explain", str(tmp_path), "--method", "lime_juice"], capsys)
    assert code == 2 and "--method 'lime_juice'" in err


@pytest.mark.gpu
def test_explain_on_the_gpu(wildlife_report):
    from adaptlab.explain.api import explain
    from adaptlab.run_loading import load_run

    result = explain(load_run(wildlife_report, device="cuda"), samples=2, report=False)
    assert result.result.plan.device.startswith("cuda")
    assert result.checks["randomisation"]["passed"]
