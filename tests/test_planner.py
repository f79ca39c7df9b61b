"""The memory planner against the cost meter: for every registered strategy, the plan made
without training is within 15 % of what a real one-epoch run's ``costs.json`` measured, per
kind and in total; plus the CLI's refusals and JSON, and the setup panel's memory line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adaptlab.config import RunConfig
from adaptlab.costs.planner import KINDS, plan_memory
from adaptlab.costs.sizes import parse_size
from adaptlab.errors import AdaptlabError
from conftest import run_cli, write_colour_folder

TOLERANCE = 0.15

CODE_TOPICS = {
    "maths": "def f{i}(x, y):\n    return x * y + {i} - (x ** 2) / (y + 1)\n",
    "strings": "def f{i}(text):\n    return text.strip().upper().replace('a', '{i}').split(',')\n"
               + "    # {pad}\n",
    "files": "def f{i}(path):\n    with open(path) as handle:\n        return handle.read({i})\n",
}


def _code_folder(root, per_label=5):
    for label, template in CODE_TOPICS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_label):  # lengths differ, so batches pad to different lengths
            (root / label / f"f{i}.py").write_text(template.format(i=i, pad="x " * (7 * i)))
    return root


def _configurations(root) -> dict[str, RunConfig]:
    common = {"device": "cpu", "epochs": 1, "lr": 1e-3}
    return {
        "wildlife": RunConfig(domain="wildlife", data=str(write_colour_folder(
            root / "colours", per_class=4)), image_size=64, batch_size=4, **common),
        "code": RunConfig(domain="code", data=str(_code_folder(root / "code")), batch_size=4,
                          **common),
        "pointcloud": RunConfig(domain="pointcloud", backbone="point_transformer",
                                train_samples=8, batch_size=4, **common),
    }


def _within(predicted: int, measured: int) -> bool:
    if measured == 0:
        return predicted == 0
    return abs(predicted - measured) <= TOLERANCE * measured


@pytest.fixture(scope="module")
def planned_and_measured(tmp_path_factory):
    """Per configuration: the plan of every registered strategy, and each strategy's real
    one-epoch run (its costs.json), trained once for the module."""
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("planner")
    results = {}
    for name, config in _configurations(root).items():
        plan = plan_memory(config)
        measured = {}
        for strategy_plan in plan.plans:
            out = root / f"{name}-{strategy_plan.strategy}"
            run(dataclasses.replace(config, strategy=strategy_plan.strategy, out=str(out)),
                progress=False)
            measured[strategy_plan.strategy] = json.loads((out / "costs.json").read_text())
        results[name] = (config, plan, measured)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("configuration", ["wildlife", "code", "pointcloud"])
def test_plan_matches_the_meter_for_every_strategy(planned_and_measured, configuration):
    from adaptlab.strategies.registry import strategy_names

    _, plan, measured = planned_and_measured[configuration]
    planned = {p.strategy: p for p in plan.plans}
    # Every registered strategy is planned, or skipped with the backbone's refusal.
    assert set(planned) | {s["strategy"] for s in plan.skipped} == set(strategy_names())
    assert not [s for s in plan.skipped if s["reason"].startswith("failed")], plan.skipped
    assert {"full", "head", "lora"} <= set(planned)
    for name, strategy_plan in planned.items():
        memory = measured[name]["memory_bytes"]
        for kind in KINDS:
            assert _within(strategy_plan.memory_bytes[kind], memory[kind]), \
                (configuration, name, kind, strategy_plan.memory_bytes[kind], memory[kind])
        total = sum(memory[kind] for kind in KINDS)
        assert _within(strategy_plan.total_bytes, total), (configuration, name)
        assert strategy_plan.trainable_params == measured[name]["trainable_params"]
        assert strategy_plan.total_params == measured[name]["total_params"]
    # The kinds differ where the strategies differ: head-only keeps the least of every kind
    # that depends on training, full fine-tuning the most gradients.
    gradients = {name: p.memory_bytes["gradients"] for name, p in planned.items()}
    assert min(gradients, key=gradients.get) == "head"
    assert max(gradients, key=gradients.get) == "full"


@pytest.mark.slow
def test_plan_follows_batch_and_input_size(planned_and_measured):
    """Saved activations grow with the batch and the image area; parameters do not."""
    config, _, _ = planned_and_measured["wildlife"]
    small = plan_memory(config, ["full"]).plans[0]
    double = plan_memory(dataclasses.replace(config, batch_size=8), ["full"]).plans[0]
    wider = plan_memory(dataclasses.replace(config, image_size=128), ["full"]).plans[0]
    assert double.memory_bytes["parameters"] == small.memory_bytes["parameters"]
    assert double.memory_bytes["activations"] == pytest.approx(
        2 * small.memory_bytes["activations"], rel=0.02)
    assert wider.memory_bytes["activations"] == pytest.approx(
        4 * small.memory_bytes["activations"], rel=0.05)


def test_budget_sizes_and_refusals():
    assert parse_size("8GiB") == 8 * 2**30
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("1.5G") == 3 * 2**29
    assert parse_size("2048") == 2048
    with pytest.raises(AdaptlabError, match=r"--budget '8 gigs': not a memory size"):
        parse_size("8 gigs")
    with pytest.raises(AdaptlabError, match="above zero"):
        parse_size("0GiB")


def test_cli_refuses_bad_input_by_name_before_planning(capsys):
    code, _, err = run_cli(["plan", "wildlife", "--strategy", "lorra"], capsys)
    assert code == 2 and "--strategy 'lorra': unknown strategy; did you mean lora?" in err
    code, _, err = run_cli(["plan", "wildlife", "--budget", "lots"], capsys)
    assert code == 2 and "--budget 'lots'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["plan", "wildlife", "--set", "rank=4"], capsys)
    assert code == 2 and "--set rank: unknown key" in err


@pytest.mark.slow
def test_cli_json_says_which_strategies_fit_the_budget(tmp_path, capsys):
    data = write_colour_folder(tmp_path / "data", per_class=4)
    base = ["plan", "wildlife", "--data", str(data), "--strategy", "head", "--strategy", "full",
            "--set", "image_size=64", "--set", "batch_size=2", "--set", "device=cpu",
            "--json"]
    code, out, _ = run_cli(base, capsys)
    payload = json.loads(out)
    assert code == 0 and [p["strategy"] for p in payload["plans"]] == ["head", "full"]
    assert payload["budget_bytes"] is None and all(p["fits"] is None for p in payload["plans"])
    assert payload["input_shape"] == [2, 3, 64, 64] and payload["backbone"] == "efficientnet_lite0"
    head, full = payload["plans"]
    assert set(head["memory_bytes"]) == set(KINDS)
    assert head["total_bytes"] == sum(head["memory_bytes"].values())
    # A budget between the two totals: head-only fits, full fine-tuning does not.
    between = (head["total_bytes"] + full["total_bytes"]) // 2
    code, out, _ = run_cli([*base, "--budget", str(between)], capsys)
    fits = {p["strategy"]: p["fits"] for p in json.loads(out)["plans"]}
    assert code == 0 and fits == {"head": True, "full": False}


@pytest.mark.slow
def test_setup_panel_shows_the_plan_and_warns_when_it_will_not_fit(tmp_path):
    from adaptlab.widgets import setup_panel

    data = write_colour_folder(tmp_path / "data", per_class=4)
    panel = setup_panel(domain="wildlife", data=str(data), strategy="full",
                        settings={"image_size": 64, "batch_size": 2, "device": "cpu"})
    assert panel.error == ""
    shown = panel.memory.plan()
    expected = plan_memory(panel.config(), ["full"]).plans[0]
    assert shown.memory_bytes == expected.memory_bytes
    assert "predicted for full" in panel.memory.summary.value
    assert "will not fit" not in panel.memory.summary.value
    panel.training_controls["batch_size"].value = "4"  # a change marks the plan stale
    assert "settings changed" in panel.memory.summary.value
    panel.memory.budget_bytes = expected.total_bytes  # the batch of 4 needs more than this
    replanned = panel.memory.plan()
    assert replanned.memory_bytes["activations"] > expected.memory_bytes["activations"]
    assert panel.memory.fits is False and "will not fit" in panel.memory.summary.value
