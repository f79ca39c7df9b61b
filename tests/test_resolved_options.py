"""A run records every option of its strategy, defaults included, so a reload, a replay or a
resume after a default changed trains and rebuilds what the run trained; a run recorded before
(only the options given) still loads and resumes; and an option given at its default is the
same setting as one left unset wherever runs or requests are compared (soups, sweeps, the
transfer cache)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.registry import get_strategy_class
from conftest import run_cli, write_colour_folder

pytestmark = pytest.mark.slow

LORA = get_strategy_class("lora")


def _declared_defaults(config_class: type) -> dict:
    """Each field's default as the dataclass declares it (the expected record)."""
    fields = dataclasses.fields(config_class)
    assert all(f.default is not dataclasses.MISSING for f in fields)  # plain defaults only
    return {f.name: f.default for f in fields}


def _adapter_config(run_dir: Path) -> dict:
    """What peft itself wrote for the trained adapter: a witness outside adaptlab's config."""
    return json.loads((run_dir / "adapter" / "adapter_config.json").read_text())


def _with_options(run_dir: Path, target: Path, options: dict) -> Path:
    """A copy of ``run_dir`` whose config.json records ``options`` (an old-style record lists
    only those given)."""
    shutil.copytree(run_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "strategy_options": options}))
    return target


def _change_lora_defaults(monkeypatch, **defaults) -> None:
    """Today's LoRA defaults changed in this process, as a later release might change them."""
    declared = {f.name: f for f in dataclasses.fields(LORA.config_class)}
    changed = dataclasses.make_dataclass(
        "ChangedLoraConfig",
        [(name, declared[name].type, dataclasses.field(default=value,
                                                       metadata=declared[name].metadata))
         for name, value in defaults.items()],
        bases=(LORA.config_class,))
    monkeypatch.setattr(LORA, "config_class", changed)
    assert all(getattr(LORA.from_options({}).config, k) == v for k, v in defaults.items())


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A LoRA run (options unset) stopped after its first step: a checkpoint to resume."""
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("stopped-lora")
    data = write_colour_folder(root / "data", per_class=6)
    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    config = RunConfig(domain="wildlife", data=str(data), strategy="lora", out=str(root / "run"),
                       device="cpu", epochs=1, image_size=64, batch_size=4, lr=3e-3)
    result = run(config, progress=False, subscribers=[stop_after_first_step],
                 on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    assert result.metrics == {}  # stopped: resumable, not finished
    return result.run_dir


def test_a_run_records_every_option_its_strategy_used(wildlife_lora_run):
    recorded = json.loads((wildlife_lora_run / "config.json").read_text())["strategy_options"]
    defaults = _declared_defaults(LORA.config_class)
    assert recorded == defaults  # the fixture gives no option: every one at its default
    assert all(type(recorded[k]) is type(v) for k, v in defaults.items())  # JSON-typed
    adapter = _adapter_config(wildlife_lora_run)
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"], adapter["use_dora"]) \
        == (recorded["r"], recorded["alpha"], recorded["dropout"], recorded["use_dora"])


def test_a_changed_default_leaves_a_recorded_run_as_it_trained(wildlife_lora_run, tmp_path,
                                                                monkeypatch):
    from adaptlab import load_run
    from adaptlab.assembly import assemble
    from adaptlab.model_card.command import command_line
    from adaptlab.model_card.inputs import read_inputs

    trained = _declared_defaults(LORA.config_class)
    _change_lora_defaults(monkeypatch, r=trained["r"] // 2, alpha=trained["alpha"] * 2)

    # The replay's first step (adaptlab run of this config.json) builds the recorded LoRA.
    replay = assemble(RunConfig.from_file(wildlife_lora_run / "config.json"))
    assert (replay.strategy.config.r, replay.strategy.config.alpha) == \
        (trained["r"], trained["alpha"])
    assert replay.config.strategy_options == trained
    # The reload fits the saved adapter (rank r) and predicts the reported test metric.
    loaded = load_run(wildlife_lora_run, device="cpu")
    ranks = {p.shape[0] for n, p in loaded.model.named_parameters() if "lora_A" in n}
    assert ranks == {trained["r"]}
    reported = json.loads((wildlife_lora_run / "metrics.json").read_text())["final"]["test"]
    table = loaded.predict(split="test", out=tmp_path / "test.csv").table
    assert (table["label"] == table["prediction"]).mean() == pytest.approx(reported["accuracy"])
    # The model card and its reproduce command name the values trained with.
    card = read_inputs(wildlife_lora_run)
    assert f"strategy.r={trained['r']}" in command_line(card.config)
    assert f"strategy.alpha={trained['alpha']!r}" in command_line(card.config)


def test_a_changed_default_does_not_change_a_resumed_run(stopped_run, tmp_path, monkeypatch):
    from adaptlab.run import run

    trained = _declared_defaults(LORA.config_class)
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    _change_lora_defaults(monkeypatch, r=trained["r"] * 2)
    result = run(RunConfig(domain="wildlife", out=str(run_dir)), resume=True, progress=False)
    assert result.metrics["final"]["test"]
    assert _adapter_config(run_dir)["r"] == trained["r"]


def test_an_old_style_config_loads_resumes_and_soups(wildlife_lora_run, stopped_run, tmp_path,
                                                      capsys):
    """Configs written before runs listed every option: read with today's defaults, except
    an option added since, read at the value such a run trained with."""
    from adaptlab import load_run
    from adaptlab.soups import make_soup

    defaults = _declared_defaults(LORA.config_class)
    old = _with_options(wildlife_lora_run, tmp_path / "old", {})
    assert load_run(old, device="cpu").config.strategy_options == {**defaults,
                                                                   "norm_stats": "update"}

    resumed = _with_options(stopped_run, tmp_path / "resumed", {"r": str(defaults["r"])})
    code, _, err = run_cli(["run", "wildlife", "--out", str(resumed), "--resume", "--quiet"],
                           capsys)
    assert code == 0, err
    assert (resumed / "metrics.json").is_file()
    assert _adapter_config(resumed)["r"] == defaults["r"]

    # Explicit default (as --set records it, text), old-style unset and new-style complete
    # records of one LoRA are one start: a soup takes them, and records every option.
    explicit = _with_options(wildlife_lora_run, tmp_path / "explicit",
                             {"r": str(defaults["r"]), "alpha": defaults["alpha"]})
    soup = make_soup([wildlife_lora_run, old, explicit], tmp_path / "soup", device="cpu")
    assert json.loads((soup / "config.json").read_text())["strategy_options"] == defaults


def test_sweeps_and_the_transfer_cache_take_an_explicit_default_as_unset(tmp_path):
    from adaptlab.sweeps import SWEEP_FILE, _check_same_sweep
    from adaptlab.sweeps.grid import NOT_SETTINGS, SweepGrid
    from adaptlab.transfer.curve import _check_same_curve
    from adaptlab.transfer.source_cache import source_key

    freeze = _declared_defaults(get_strategy_class("freeze").config_class)
    unset = RunConfig(domain="wildlife", strategy="freeze", out="a")
    given = dataclasses.replace(unset, strategy_options={"head": freeze["head"],
                                                         "head_dropout": str(freeze["head_dropout"])})
    other = dataclasses.replace(unset, strategy_options={"head": "mlp"})
    assert freeze["head"] != "mlp"

    # A sweep recorded before runs listed every option (its settings as they were then: the
    # given options only), continued with the defaults spelled out: the same sweep.
    out = tmp_path / "sweep"
    (out / "k=0-seed=0").mkdir(parents=True)
    settings = {k: v for k, v in dataclasses.asdict(unset).items() if k not in NOT_SETTINGS}
    (out / SWEEP_FILE).write_text(json.dumps({"domain": "wildlife", "varied": "k",
                                              "settings": settings}))
    _check_same_sweep(out, SweepGrid(given, "k", (0, 1), (0,)))
    with pytest.raises(AdaptlabError, match=r"other settings \(strategy_options\)"):
        _check_same_sweep(out, SweepGrid(other, "k", (0, 1), (0,)))

    assert source_key(given) == source_key(unset) != source_key(other)

    curve = tmp_path / "curve"
    curve.mkdir()
    recorded = {side: {**dataclasses.asdict(unset), "out": ""} for side in ("target", "source")}
    (curve / "curve_config.json").write_text(json.dumps(recorded))
    _check_same_curve(curve, given, given)
    with pytest.raises(AdaptlabError, match=r"other target settings \(strategy_options\)"):
        _check_same_curve(curve, other, given)
