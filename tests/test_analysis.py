"""Telly's layer-change analyser: similarity measures, the per-block comparison, the rule for
the suggested k, and ``adaptlab analyse``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from adaptlab.analysis.layer_change import analyse_run, block_representations
from adaptlab.analysis.similarity import linear_cka, rsa
from conftest import run_cli, write_colour_folder

THRESHOLD = 0.999


def _feature_space_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s eq. (feature-space form), independent of the Gram form under test."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _reference_rsa(x: np.ndarray, y: np.ndarray) -> float:
    """RDMs from numpy's correlation matrix, Spearman as Pearson of ranks."""
    upper = np.triu_indices(len(x), k=1)
    dx, dy = (1 - np.corrcoef(x))[upper], (1 - np.corrcoef(y))[upper]
    return float(np.corrcoef(rankdata(dx), rankdata(dy))[0, 1])


def test_similarity_measures_match_their_definitions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(12, 7, generator=gen, dtype=torch.float64) \
        + 0.5 * torch.randn(40, 7, generator=gen, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(_feature_space_cka(x.numpy(), y.numpy()), abs=1e-10)
    assert rsa(x, y) == pytest.approx(_reference_rsa(x.numpy(), y.numpy()), abs=1e-10)
    # Equal up to rotation and scale: CKA 1; an unrelated representation: far lower.
    rotation = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))[0]
    assert linear_cka(x, 2.5 * x @ rotation) == pytest.approx(1.0, abs=1e-12)
    unrelated = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    assert linear_cka(x, unrelated) < 0.5 and abs(rsa(x, unrelated)) < 0.3
    with pytest.raises(ValueError, match="40 and 39 examples"):
        linear_cka(x, y[:39])


@pytest.fixture(scope="module")
def top_block_run(tmp_path_factory):
    """Wildlife photos, every block frozen but the top one (and the head)."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("analysis")
    data = write_colour_folder(root / "data", per_class=14)
    config = RunConfig(domain="wildlife", data=str(data), strategy="freeze",
                       strategy_options={"k": -1}, out=str(root / "run"), device="cpu",
                       epochs=2, image_size=64, batch_size=8, lr=3e-3)
    return run(config, progress=False).run_dir


def _leading_at_or_above(values: list[float], threshold: float) -> int:
    count = 0
    while count < len(values) and values[count] >= threshold:
        count += 1
    return count


def test_frozen_blocks_are_unchanged_and_the_trained_top_block_is_not(top_block_run):
    from adaptlab import load_run

    loaded = load_run(top_block_run)
    blocks = loaded.layer_map.num_blocks
    result = analyse_run(loaded, threshold=THRESHOLD)
    cka = [row["cka"] for row in result.layers]
    assert len(cka) == blocks
    # The freeze strategy left blocks 0..L-2 as pre-trained: identical outputs.
    assert cka[:-1] == pytest.approx([1.0] * (blocks - 1), abs=1e-9)
    assert [row["rsa"] for row in result.layers][:-1] == pytest.approx([1.0] * (blocks - 1))
    assert cka[-1] < 1 - 1e-3
    assert result.suggested_k == _leading_at_or_above(cka, THRESHOLD) == blocks - 1
    # A threshold the top block clears suggests every block; one no block reaches, none.
    assert analyse_run(loaded, threshold=cka[-1]).suggested_k == blocks
    assert result.compared_with == "unadapted"


def test_a_planted_change_shows_at_its_depth_and_above(top_block_run):
    from adaptlab import load_run

    loaded = load_run(top_block_run)
    changed = 3
    module = loaded.model.get_submodule(loaded.layer_map.blocks[changed][-1])
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.5 * param.std() * torch.randn_like(param))
    cka = [row["cka"] for row in analyse_run(loaded, threshold=THRESHOLD).layers]
    assert cka[:changed] == pytest.approx([1.0] * changed, abs=1e-9)
    assert cka[changed] < 0.999


def test_a_model_against_itself_is_one_everywhere(top_block_run):
    from adaptlab import load_run

    loaded = load_run(top_block_run)
    from adaptlab.analysis.layer_change import probe_batch

    _, inputs = probe_batch(loaded, 16, None)
    first = block_representations(loaded.model, loaded.layer_map, inputs)
    again = block_representations(loaded.model, loaded.layer_map, inputs)
    assert [linear_cka(a.flatten(1), b.flatten(1)) for a, b in zip(first, again, strict=True)] == \
        pytest.approx([1.0] * len(first), abs=1e-9)


def test_lora_run_is_analysed_through_the_peft_wrapper(wildlife_lora_run):
    """LoRA wraps the model (names gain a prefix) and is switched off in place for the
    comparison; its adapters changed the blocks they sit in."""
    from adaptlab import load_run

    loaded = load_run(wildlife_lora_run)
    result = analyse_run(loaded, threshold=THRESHOLD)
    assert len(result.layers) == loaded.layer_map.num_blocks
    assert result.layers[-1]["cka"] < 1 - 1e-4


def test_cli_writes_the_analysis_and_refuses_bad_input(top_block_run, tmp_path, capsys):
    code, out, err = run_cli(["analyse", str(top_block_run), "--json", "--probe", "8",
                              "--threshold", str(THRESHOLD), "--device", "cpu"], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert set(printed) >= {"layers", "suggested_k", "threshold", "rule"}
    assert set(printed["layers"][0]) >= {"name", "cka", "rsa"}
    assert printed["probe"] == 8
    saved = json.loads((top_block_run / "analysis" / "layer_change.json").read_text())
    assert saved == printed
    assert (top_block_run / "analysis" / "layer_change.png").stat().st_size > 1000

    code, _, err = run_cli(["analyse", str(top_block_run), "--probe", "2"], capsys)
    assert code == 2 and "--probe 2" in err
    code, _, err = run_cli(["analyse", str(top_block_run), "--threshold", "1.5"], capsys)
    assert code == 2 and "--threshold 1.5" in err
    code, _, err = run_cli(["analyse", str(tmp_path)], capsys)
    assert code == 2 and str(tmp_path) in err and "config.json" in err


def test_the_report_shows_the_analysis(top_block_run, capsys):
    from adaptlab.analysis import analyse

    result = analyse(top_block_run, threshold=THRESHOLD, device="cpu")
    code, _, err = run_cli(["explain", str(top_block_run), "--samples", "2", "--no-checks",
                            "--no-compare", "--device", "cpu"], capsys)
    assert code == 0, err
    page = (top_block_run / "report" / "index.html").read_text()
    assert "Which blocks did fine-tuning change?" in page
    assert f"<b>{result.suggested_k}</b> of {result.num_blocks} blocks" in page


def test_comparison_view_analyses_and_the_setup_panel_starts_from_the_suggestion(
        top_block_run):
    """The notebook's Analyse panel on the picked run; a new freeze run on the same backbone
    beside it starts at the k the analysis suggested."""
    import asyncio

    from adaptlab.widgets.compare_view import ComparisonView
    from adaptlab.widgets.setup_view import SetupPanel

    view = ComparisonView(runs=[top_block_run])
    result = asyncio.run(view.analyse(threshold=THRESHOLD, probe=8))
    blocks = len(result.layers)
    assert result.suggested_k == blocks - 1  # every block frozen in training but the top one
    shown = view.analyse_panel.output.value
    assert shown.count("<tr>") == 1 + blocks and shown.count("data:image/png;base64,") == 1
    assert f"<b>{blocks - 1}</b> of {blocks} blocks" in shown

    config = json.loads((top_block_run / "config.json").read_text())
    panel = SetupPanel(domain="wildlife", data=config["data"], backbone=config["backbone"],
                       strategy="freeze", out=str(top_block_run.parent / "next"))
    assert panel.strategy_controls["k"].value == blocks - 1
    assert panel.config().strategy_options["k"] == blocks - 1
    assert str(top_block_run) in panel.strategy_box.children[1].value
    # Another backbone's blocks are not these: its k is not suggested from this run.
    from adaptlab.analysis.layer_change import latest_suggestion

    assert latest_suggestion([top_block_run], "wildlife", "resnet50") is None
    assert latest_suggestion([top_block_run], "wildlife", config["backbone"]) == \
        (blocks - 1, top_block_run)
