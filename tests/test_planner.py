"""The memory planner against the cost meter: for every registered strategy, the plan made
without training is within 15 % of what a real short run's ``costs.json`` measured, per kind
and in total (SlimFit, whose sets after its first rotation are estimated: the plan of the sets
its run logged, and the plan before training in total), on small data of every domain plugin
(images, code, point clouds, medical scans, forecast and labelled series, weather fields);
plus the CLI's refusals and JSON, and the setup panel's memory line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptlab.config import RunConfig
from adaptlab.costs.planner import KINDS, plan_memory
from adaptlab.costs.sizes import parse_size
from adaptlab.errors import AdaptlabError
from conftest import run_cli, scratch_dir, write_colour_folder

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


def _point_folder(root, per_class=6):
    """Clouds of three shapes (sphere, box surface, noisy plane) as NPY files, one folder per
    class: the demo's generated sources are hundreds of clouds, too many for a quick run."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(("sphere", "box", "plane")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            points = rng.normal(size=(600, 3))
            if index == 0:
                points /= np.linalg.norm(points, axis=1, keepdims=True)
            elif index == 1:
                points = np.clip(points, -1, 1)
                axis = rng.integers(0, 3, size=600)
                points[np.arange(600), axis] = np.sign(points[np.arange(600), axis])
            else:
                points[:, 2] *= 0.05
            np.save(root / name / f"{name}{i}.npy", points.astype(np.float32))
    return root


def _configurations(root) -> dict[str, RunConfig]:
    """Each domain's own reader on files made by that domain's tests; few training samples,
    since a run's evaluations (every window of a series at Fracast's 2048-step context) cost
    more than its steps."""
    from test_medical import _write_medmnist
    from test_predict_timeseries import _monthly_csv, _seasonal
    from test_timeseries import _class_folders
    from test_weather import _event_dataset
    from test_weather_mask import _sst
    from test_weather_mask import _write as _write_sst

    root.mkdir(parents=True, exist_ok=True)
    common = {"device": "cpu", "epochs": 1, "lr": 1e-3}
    _event_dataset(120).to_netcdf(root / "events.nc", engine="h5netcdf")
    return {
        "wildlife": RunConfig(domain="wildlife", data=str(write_colour_folder(
            root / "colours", per_class=4)), image_size=64, batch_size=4, **common),
        "code": RunConfig(domain="code", data=str(_code_folder(root / "code")), batch_size=4,
                          **common),
        "pointcloud": RunConfig(domain="pointcloud", data=str(_point_folder(root / "points")),
                                backbone="point_transformer", batch_size=4, **common),
        "medical": RunConfig(domain="medical", data=str(_write_medmnist(
            root / "scans.npz", np.random.default_rng(0), n=(12, 6, 6))), image_size=32,
            batch_size=4, **common),
        "timeseries": RunConfig(domain="timeseries", data=str(_monthly_csv(
            root / "levels.csv", "2000-01", {"level": _seasonal(72, 500, 50)})), horizon=1,
            train_samples=4, batch_size=2, **common),
        "timeseries-classes": RunConfig(domain="timeseries", data=str(_class_folders(
            root / "classes", per_class=3)), backbone="fracast-features", train_samples=4,
            batch_size=2, **common),
        "weather": RunConfig(domain="weather", data=str(root / "events.nc"), train_samples=12,
                             batch_size=4, **common),
        "weather-fields": RunConfig(domain="weather", data=str(_write_sst(
            root / "sst.nc", _sst())), backbone="field_unet", train_samples=12, batch_size=4,
            **common),
    }


def _within(predicted: int, measured: int) -> bool:
    if measured == 0:
        return predicted == 0
    return abs(predicted - measured) <= TOLERANCE * measured


# SlimFit's trainable set changes every step; the plan replays the schedule for every step of
# the run (strategies/slimfit/replay.py), and its runs here go past the first rotation (every
# unit once, from seeded scores) into the steps the replay predicts from weights, rates and
# where the first batch's gradient reaches: steps an epoch x epochs, code and pointcloud
# 3 x 7, Fracast with either head 2 x 7, field CNN 3 x 6, field U-Net 3 x 8, EfficientNet-Lite0
# 2 x 6 (wildlife, 10 steps a rotation) and 3 x 6 (medical).
SLIMFIT_EPOCHS = {"code": 7, "pointcloud": 7, "timeseries": 7, "timeseries-classes": 7,
                  "weather": 6, "weather-fields": 8, "wildlife": 6, "medical": 6}
# Past the rotation the replay plans the same kind of sets as the run's, not the run's own, and
# the heaviest of them is an estimate. On the six configurations other than EfficientNet's,
# seeds 0-2, torch on two threads (the scores' last digits follow the thread count and the
# CPU, and with them which sets come after the rotation), the planned gradients came to
# 0.61-1.20 of the measured peak and the totals to 0.93-1.15 (activations rule them); on
# EfficientNet-Lite0 (wildlife and medical, 18 runs at freeze ratios 0.5-0.95) gradients
# 0.87-1.87 and totals 0.93-1.16. So the meter's kinds are held to the plan of the sets the run
# logged (the counting, within 15 % as for every strategy), and the plan made before training
# to its total, what must fit: never short of it by more than 15 %, never over by more than
# SLIMFIT_OVER (a plan that counted every embedding row as moving was 1.09-1.24 over).
SLIMFIT_OVER = 0.30


class _Measured:
    """Plans per configuration and real runs per (configuration, strategy), made on first use
    and shared by the module's tests."""

    def __init__(self, root) -> None:
        self.root = root
        self.configs = _configurations(root)
        self.plans: dict = {}
        self.costs: dict = {}

    def plan(self, name: str):
        if name not in self.plans:
            self.plans[name] = plan_memory(self.configs[name])
        return self.plans[name]

    def run_config(self, name: str, strategy: str) -> RunConfig:
        epochs = SLIMFIT_EPOCHS[name] if strategy == "slimfit" else self.configs[name].epochs
        return dataclasses.replace(self.configs[name], strategy=strategy, epochs=epochs,
                                   out=str(self.root / f"{name}-{strategy}"))

    def strategy_plan(self, name: str, strategy: str):
        """The plan of the run :meth:`run_costs` makes (SlimFit's sets follow its length)."""
        if strategy != "slimfit":
            return {p.strategy: p for p in self.plan(name).plans}[strategy]
        return plan_memory(self.run_config(name, strategy), [strategy]).plans[0]

    def run_costs(self, name: str, strategy: str) -> dict:
        from adaptlab.run import run

        if (name, strategy) not in self.costs:
            config = self.run_config(name, strategy)
            run(config, progress=False)
            self.costs[name, strategy] = json.loads(
                (Path(config.out) / "costs.json").read_text())
            # Only the costs (and SlimFit's schedule) are read back: the module's runs'
            # checkpoints, with their optimizer state, would hold 2 GB until the module ends.
            shutil.rmtree(Path(config.out) / "checkpoints")
        return self.costs[name, strategy]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    with scratch_dir(tmp_path_factory, "planner") as root:
        yield _Measured(root)


# A real run per (configuration, strategy) costs seconds to tens of seconds: every strategy is
# planned on every configuration (the test after this one), and measured on one, the
# transformer text encoder every family applies to (idpt: the point transformer it is made
# for); the strategies with the most distinct memory profiles on every configuration, where
# they apply (the others are skipped there, each with the planner's reason).
CONFIGURATIONS = ("wildlife", "code", "pointcloud", "medical", "timeseries",
                  "timeseries-classes", "weather", "weather-fields")
MEASURED_EVERYWHERE = {"full", "head", "freeze", "lora", "lst", "slimfit"}
MEASURED_ON = {"idpt": "pointcloud"}


def _strategy_cases():
    from adaptlab.strategies.registry import strategy_names

    for configuration in CONFIGURATIONS:
        for strategy in strategy_names():
            if strategy.startswith("test-"):
                continue  # registered by another test module for its own checks, not shipped
            if strategy == "slimfit" and configuration not in SLIMFIT_EPOCHS:
                continue
            if strategy not in MEASURED_EVERYWHERE and \
                    configuration != MEASURED_ON.get(strategy, "code"):
                continue
            yield pytest.param(configuration, strategy, id=f"{configuration}-{strategy}")


@pytest.mark.slow
@pytest.mark.parametrize(("configuration", "strategy"), list(_strategy_cases()))
def test_plan_matches_the_meter(measured, configuration, strategy, monkeypatch):
    plan = measured.plan(configuration)
    skipped = {s["strategy"]: s["reason"] for s in plan.skipped}
    assert not skipped.get(strategy, "").startswith("failed"), skipped[strategy]
    if strategy in skipped:
        pytest.skip(f"{strategy} does not apply here: {skipped[strategy]}")
    planned = measured.strategy_plan(configuration, strategy)
    costs = measured.run_costs(configuration, strategy)
    memory = costs["memory_bytes"]
    assert planned.total_params == costs["total_params"]
    if strategy == "slimfit":  # every step of the run planned
        assert planned.planned_steps == costs["optimizer_steps"]
        total = costs["peak_total_bytes"]
        assert (1 - TOLERANCE) * total <= planned.total_bytes <= (1 + SLIMFIT_OVER) * total, \
            (planned.total_bytes, total)
        planned = _plan_of_the_logged_sets(measured, configuration, monkeypatch)
    for kind in KINDS:
        assert _within(planned.memory_bytes[kind], memory[kind]), \
            (kind, planned.memory_bytes[kind], memory[kind])
    # What must fit: the heaviest step's kinds together.
    assert _within(planned.total_bytes, costs["peak_total_bytes"])


def _plan_of_the_logged_sets(measured, configuration, monkeypatch):
    """The plan of SlimFit's run with the units its log says each step trained in place of the
    replayed ones: the counting of every set, apart from predicting the sets."""
    from safetensors import safe_open

    from adaptlab.strategies.slimfit import strategy as slimfit

    config = measured.run_config(configuration, "slimfit")
    with safe_open(str(Path(config.out) / "slimfit_schedule.safetensors"), "pt") as schedule:
        logged = schedule.get_tensor("trained")
    monkeypatch.setattr(slimfit, "replay_schedule", lambda *args: [
        row.nonzero().flatten().tolist() for row in logged])
    return plan_memory(config, ["slimfit"]).plans[0]


@pytest.mark.slow
def test_a_run_shorter_than_slimfits_rotation_is_planned_for_the_steps_it_takes(measured):
    """With seed 1 MiniLM's word embeddings (a fifth of its weights) come in the rotation's
    ninth group: a run of 3 steps never trains them, and its plan leaves them out, while the
    plan of a run long enough to reach them is above this one's measurement."""
    from safetensors import safe_open

    from adaptlab.costs.planner import MemoryPlanner
    from adaptlab.run import run

    config = dataclasses.replace(measured.configs["code"], strategy="slimfit", seed=1,
                                 out=str(measured.root / "code-slimfit-short"))
    planner = MemoryPlanner(config)
    short = planner.plan("slimfit")
    long = planner.plan("slimfit", config=dataclasses.replace(
        config, epochs=SLIMFIT_EPOCHS["code"]))
    costs = run(config, progress=False).costs
    with safe_open(str(Path(config.out) / "slimfit_schedule.safetensors"), "pt") as schedule:
        units = json.loads(schedule.metadata()["units"])
        trained = schedule.get_tensor("trained").any(dim=0)
    embeddings = [i for i, name in enumerate(units) if name.endswith("word_embeddings.weight")]
    assert len(embeddings) == 1 and not trained[embeddings[0]]
    memory = costs["memory_bytes"]
    assert short.planned_steps == costs["optimizer_steps"] < long.planned_steps
    for kind in KINDS:
        assert _within(short.memory_bytes[kind], memory[kind]), \
            (kind, short.memory_bytes[kind], memory[kind])
    total = costs["peak_total_bytes"]
    assert _within(short.total_bytes, total)
    assert long.total_bytes > (1 + TOLERANCE) * total


@pytest.mark.slow
def test_slimfits_replay_names_the_units_a_run_trains_past_its_first_rotation(measured):
    """The point transformer at freeze ratio 0.95 trains 2 of its 33 units a step: the first
    rotation (every unit once, from the seeded initial scores) is 17 steps; the steps after it
    follow scores the replay predicts from the weights and each step's rate. The run's own log
    says which units trained."""
    from safetensors import safe_open

    from adaptlab.costs.planner import MemoryPlanner
    from adaptlab.run import run
    from adaptlab.strategies.registry import get_strategy_class

    config = dataclasses.replace(measured.configs["pointcloud"], strategy="slimfit", epochs=7,
                                 strategy_options={"freeze_ratio": 0.95},
                                 out=str(measured.root / "pointcloud-slimfit-0.95"))
    costs = run(config, progress=False).costs
    with safe_open(str(Path(config.out) / "slimfit_schedule.safetensors"), "pt") as schedule:
        units = json.loads(schedule.metadata()["units"])
        logged = schedule.get_tensor("trained")
    rotation = -(-len(units) // 2)
    assert (len(units), rotation, costs["optimizer_steps"]) == (33, 17, 21)
    planner = MemoryPlanner(config)
    strategy = get_strategy_class("slimfit").from_options(config.strategy_options)
    model, layer_map = planner.fresh_model(strategy, config)
    planned = strategy.planned_trainable_sets(model, layer_map,
                                              planner.step_rates(model, strategy, config))
    assert len(planned) == 21
    for step in range(rotation + 2):
        want = {units[i] for i in range(len(units)) if logged[step, i]}
        assert {name for name in planned[step] if name in units} == want, step + 1


@pytest.mark.slow
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_strategy_is_planned_and_kinds_differ_where_strategies_do(measured,
                                                                         configuration):
    from adaptlab.strategies.registry import strategy_names

    plan = measured.plan(configuration)
    # Strategies another test module registered for its own checks (test_lifecycle's
    # "test-swap-blocks" needs two blocks; Fracast has one) are not shipped: left out here.
    planned = {p.strategy: p for p in plan.plans if not p.strategy.startswith("test-")}
    skipped = [s for s in plan.skipped if not s["strategy"].startswith("test-")]
    shipped = {name for name in strategy_names() if not name.startswith("test-")}
    assert set(planned) | {s["strategy"] for s in skipped} == shipped
    assert not [s for s in skipped if s["reason"].startswith("failed")], skipped
    # A strategy that does not apply says so by name (the refusal a run would make).
    assert all(s["reason"].startswith(f"strategy '{s['strategy']}'") for s in skipped), skipped
    assert {"full", "head", "lora"} <= set(planned)
    # Parameters are the model's, whatever trains; head-only trains the fewest, full the most.
    full, head = planned["full"], planned["head"]
    assert head.memory_bytes["parameters"] == full.memory_bytes["parameters"]
    gradients = {name: p.memory_bytes["gradients"] for name, p in planned.items()}
    assert min(gradients, key=gradients.get) == "head"
    assert max(gradients, key=gradients.get) == "full"


@pytest.mark.slow
def test_plan_follows_batch_and_input_size(measured):
    """Saved activations grow with the batch and the image area; parameters do not."""
    config = dataclasses.replace(measured.configs["wildlife"], batch_size=2)
    small = plan_memory(config, ["full"]).plans[0]
    double = plan_memory(dataclasses.replace(config, batch_size=4), ["full"]).plans[0]
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
    assert code == 2 and "--strategy 'lorra': unknown strategy; did you mean lora, " in err
    code, _, err = run_cli(["plan", "wildlife", "--budget", "lots"], capsys)
    assert code == 2 and "--budget 'lots'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["plan", "wildlife", "--set", "rnak=4"], capsys)
    assert code == 2 and "--set rnak: unknown key" in err


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


@pytest.mark.slow
def test_a_model_that_reads_values_is_planned_with_a_real_forward(tmp_path, monkeypatch):
    """Fake tensors have no values: a loss that reads one (``.item()``) makes the planner fall
    back to one real forward, which counts the same bytes as the fake one does."""
    from adaptlab.costs.planner import MemoryPlanner

    config = RunConfig(domain="wildlife", data=str(write_colour_folder(tmp_path / "d",
                                                                       per_class=4)),
                       device="cpu", image_size=64, batch_size=2)
    planner = MemoryPlanner(config)
    fake = planner.plan("lora")
    loss = planner.task.loss

    def reading_loss(outputs, labels):
        value = loss(outputs, labels)
        return value * 1.0 if value.item() >= 0 else value

    monkeypatch.setattr(planner.task, "loss", reading_loss)
    real = planner.plan("lora")
    assert (fake.forward, real.forward) == ("fake", "real")
    assert real.memory_bytes == fake.memory_bytes



@pytest.mark.slow
def test_the_panel_plans_one_of_the_training_views_processes(tmp_path):
    """The training view's process count reaches the memory line: with the weights sharded,
    each process holds half of every tensor (rows rounded up) and half of each batch."""
    from adaptlab.widgets import setup_panel, training_view

    data = write_colour_folder(tmp_path / "data", per_class=4)
    panel = setup_panel(domain="wildlife", data=str(data), strategy="full",
                        settings={"image_size": 64, "batch_size": 4, "device": "cpu"})
    view = training_view(panel)
    try:
        alone = panel.memory.plan()
        assert "in each of" not in panel.memory.summary.value
        view.processes.value = 2
        assert "settings changed" in panel.memory.summary.value
        replicated = panel.memory.plan()
        assert "in each of 2 processes (" in panel.memory.summary.value
        panel.training_controls["fsdp"].value = True  # the panel's own control
        assert "--set fsdp=True" in panel.command_text.value
        each = panel.memory.plan()
    finally:
        view.worker.close()
    # Replicated, each process holds every weight and half of each batch.
    whole = alone.memory_bytes["parameters"]
    assert replicated.memory_bytes["parameters"] == whole
    assert replicated.memory_bytes["activations"] < 0.6 * alone.memory_bytes["activations"]
    # Sharded, half of every tensor's rows, rounded up: a little over half of the whole.
    assert 0.5 * whole <= each.memory_bytes["parameters"] <= 0.51 * whole
    assert each.memory_bytes["activations"] == replicated.memory_bytes["activations"]
    assert "in each of 2 processes, weights sharded" in panel.memory.summary.value
