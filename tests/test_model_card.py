"""``MODEL_CARD.md``: written by every finished run, rewritten by ``adaptlab explain``.

Expected values come from outside the card's code: the licences from the plugins' own
attribution files, the metrics from ``metrics.json``, the checks from
``report/attributions.json``, the interval from scipy, the command from the CLI's parser.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from importlib.resources import files
from pathlib import Path

import pytest

from adaptlab.cli import _parser, build_run_config, main
from adaptlab.config import RunConfig
from conftest import write_colour_folder

FAST = {"device": "cpu", "epochs": 1, "image_size": 32, "batch_size": 16}
# A card that cannot be written only warns in a run; here that warning is a failure.
pytestmark = pytest.mark.filterwarnings("error::adaptlab.model_card.ModelCardWarning")


def _section(card: str, title: str) -> str:
    """The text of one ``## title`` section."""
    start = card.index(f"\n## {title}\n")
    end = card.find("\n## ", start + 1)
    return card[start:end if end != -1 else None]


def _rebuilt(command: str) -> RunConfig:
    argv = shlex.split(command)
    assert argv[0] == "adaptlab"
    return build_run_config(_parser().parse_args(argv[1:]))


def _command(card: str) -> str:
    block = _section(card, "How to reproduce").split("```bash\n")[1]
    return block.split("\n```")[0]


# -- no training ----------------------------------------------------------------------------

def test_every_demo_dataset_declares_its_licence_and_its_attribution_file_exists():
    from adaptlab.plugins.registry import discover_domains

    found = discover_domains()
    assert found.domains and not found.errors
    for domain in found.domains.values():
        for dataset in domain.datasets:
            if dataset.source != "demo":
                continue
            where = f"{domain.name}/{dataset.name}"
            assert dataset.licence.strip(), f"{where} declares no licence"
            if not dataset.attribution:
                continue
            location, _, selector = dataset.attribution.partition("#")
            package, _, path = location.partition(":")
            resource = files(package).joinpath(path)
            assert resource.is_file(), f"{where}: {dataset.attribution} is missing"
            data = json.loads(resource.read_text(encoding="utf-8"))
            if selector:  # a key of the file's object, or a file prefix of its items
                assert (selector in data if isinstance(data, dict)
                        else any(item["file"].startswith(selector) for item in data)), where


def test_every_datasets_licence_section_reads_its_attribution_file():
    from adaptlab.model_card.licences import licence_lines
    from adaptlab.plugins.registry import discover_domains

    for domain in discover_domains().domains.values():
        for dataset in domain.datasets:
            text = "\n".join(licence_lines(dataset))
            assert dataset.licence in text
            if dataset.attribution:  # a table of the licences the file lists, with counts
                assert "| licence" in text and dataset.attribution in text, dataset.name


def test_a_card_that_cannot_be_written_warns_and_leaves_the_run(tmp_path):
    from adaptlab.errors import AdaptlabError
    from adaptlab.model_card import ModelCardWarning, try_write_model_card, write_model_card

    (tmp_path / "config.json").write_text(RunConfig(domain="no-such-domain").to_json())
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(AdaptlabError, match="no-such-domain"):
        write_model_card(tmp_path)
    with pytest.warns(ModelCardWarning, match="the run is complete"):
        assert try_write_model_card(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.json"]


def test_reproduce_command_parses_back_to_the_config():
    from adaptlab.model_card.command import command_line
    from adaptlab.run import config_for
    from adaptlab.strategies.registry import get_strategy_class

    config = dataclasses.replace(
        config_for("wildlife", dataset="cartoons", backbone="efficientnet_lite0",
                   strategy="lora", out="runs/a folder"),
        lr=0.0007, train_samples=None, mixed_precision="no", seed=3,
        strategy_options={"r": 4, "alpha": 8.0})
    back = _rebuilt(command_line(config))
    options = dataclasses.asdict(config)
    assert {k: v for k, v in dataclasses.asdict(back).items() if k != "strategy_options"} == \
        {k: v for k, v in options.items() if k != "strategy_options"}
    lora = get_strategy_class("lora")  # --set hands strategy options over as text
    assert lora.from_options(back.strategy_options).config == \
        lora.from_options(config.strategy_options).config


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    from adaptlab.model_card.sections import wilson_interval

    for successes, n in ((14, 28), (0, 7), (28, 28), (3, 95)):
        expected = binomtest(successes, n).proportion_ci(method="wilson")
        assert wilson_interval(successes, n) == pytest.approx((expected.low, expected.high))


# -- real runs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    from adaptlab.run import run

    out = tmp_path_factory.mktemp("card") / "animals"
    run(RunConfig(domain="wildlife", dataset="animals", strategy="head", out=str(out), **FAST),
        progress=False)
    return out


@pytest.mark.slow
def test_card_names_the_licences_of_the_shipped_data(demo_run):
    card = (demo_run / "MODEL_CARD.md").read_text()
    data = _section(card, "Training data")
    attribution = json.loads(files("adaptlab_wildlife").joinpath(
        "demo_data/ATTRIBUTION.json").read_text(encoding="utf-8"))
    photos = {item["license"] for item in attribution if item["file"].startswith("photos/")}
    drawings = {item["license"] for item in attribution if item["file"].startswith("cartoons/")}
    assert len(photos) > 1
    for licence in photos | drawings:  # the photos trained it, the drawings gave the baseline
        assert f"| {licence} |" in data, licence
    assert "ATTRIBUTION.json" in data
    assert card.startswith("---\nlibrary_name: adaptlab\n")
    assert "\nlicense:" not in card.split("\n---\n")[0]  # several licences: none claimed


@pytest.mark.slow
def test_card_metrics_and_command_are_the_run_folders(demo_run):
    from scipy.stats import binomtest

    card = (demo_run / "MODEL_CARD.md").read_text()
    metrics = json.loads((demo_run / "metrics.json").read_text())
    monitor = metrics["monitor"]
    adapted, base = metrics["final"]["test"][monitor], metrics["baseline"]["test"][monitor]
    row = next(line for line in _section(card, "Evaluation").splitlines()
               if line.startswith(f"| **{monitor}**"))
    assert f"| {adapted:.4f} | {base:.4f} |" in row
    assert metrics["baseline_method"] in card
    size = metrics["split_sizes"]["test"]
    assert size < 100 and f"**Small test split:** {size} samples" in card
    accuracy = metrics["final"]["test"]["accuracy"]
    interval = binomtest(round(accuracy * size), size).proportion_ci(method="wilson")
    assert f"{interval.low:.4f}-{interval.high:.4f}" in card
    # --set hands strategy options over as text; the run types them as it resolves them.
    assert _rebuilt(_command(card)).with_resolved_options() == \
        RunConfig.from_file(demo_run / "config.json")
    assert f"Not explained yet: `adaptlab explain {demo_run}`" in card


@pytest.mark.slow
def test_user_data_card_says_the_licence_is_unknown_then_explain_adds_the_checks(tmp_path):
    from adaptlab.run import run

    data = write_colour_folder(tmp_path / "colours", per_class=6)
    out = tmp_path / "run"
    config = RunConfig(domain="wildlife", data=str(data), strategy="head", out=str(out), **FAST)
    run(config, progress=False)
    card = (out / "MODEL_CARD.md").read_text()
    assert "**Licence: unknown.**" in _section(card, "Training data")
    assert f"--data {data}" in card
    assert _rebuilt(_command(card)).with_resolved_options() == \
        RunConfig.from_file(out / "config.json")

    assert main(["explain", str(out), "--method", "saliency", "--index", "0", "--no-compare",
                 "--device", "cpu"]) == 0
    report = json.loads((out / "report" / "attributions.json").read_text())
    explained = _section((out / "MODEL_CARD.md").read_text(), "Explanations")
    assert "Not explained yet" not in explained and "`saliency`" in explained
    checks = report["checks"]
    expected = {
        "deletion AUC": checks["faithfulness"]["deletion_auc"],
        "insertion AUC": checks["faithfulness"]["insertion_auc"],
        "infidelity": checks["infidelity_sensitivity"]["infidelity"],
        "randomisation": checks["randomisation"]["mean_rank_correlation"],
    }
    for name, value in expected.items():
        row = next(line for line in explained.splitlines() if line.startswith(f"| {name}"))
        assert f"| {value:.4g} |" in row, (name, row)
    verdict = "passed" if checks["randomisation"]["passed"] else "**FAILED**"
    assert verdict in explained
    assert "**Licence: unknown.**" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_exported_folder_reads_back_through_the_hubs_own_libraries(demo_run, tmp_path):
    """What the Hub and transformers read from a pushed folder, read here by their own code:
    the card's metadata by ``huggingface_hub.ModelCard``, the labels by ``PretrainedConfig``,
    the weights' format tag by safetensors (transformers refuses a file without it)."""
    from huggingface_hub import ModelCard
    from safetensors import safe_open
    from transformers import PretrainedConfig

    from adaptlab.export import export_run

    out = tmp_path / "hub"
    export_run(demo_run, out)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "adaptlab"
    assert {"adaptlab", "wildlife", "head"} <= set(card.data.tags)
    assert card.data.license is None  # the photos carry several licences (test above)
    assert card.text.lstrip().startswith("# ")
    config = PretrainedConfig.from_pretrained(out)
    classes = json.loads((demo_run / "data.json").read_text())["class_names"]
    assert [config.id2label[i] for i in range(len(classes))] == classes
    assert {name: config.label2id[name] for name in classes} == {n: i for i, n in
                                                                enumerate(classes)}
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert weights.metadata() == {"format": "pt"}
