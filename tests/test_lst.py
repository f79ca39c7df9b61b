"""Ladder side-tuning (lst): the frozen backbone saves nothing for backward, exactly the side
network and the head train, the side starts from the backbone's own weights at the indices
magnitude pruning (or, with ``pruning=fisher``, the Fisher information) selects, a run resumed
mid-epoch ends bit-identical, bad options and backbones are refused by name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from adaptlab.config import RunConfig
from adaptlab.costs.meter import SavedActivationCounter
from adaptlab.engine.callbacks import EngineCallback
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.strategies.registry import get_strategy_class
from conftest import write_colour_folder
from lst_models import prepared

pytestmark = pytest.mark.slow


def _saved_bytes(model: nn.Module, run_forward) -> int:
    with SavedActivationCounter(model) as counter:
        run_forward()
    return counter.bytes


def _watching_frozen(frozen: nn.Module, run_forward):
    """``run_forward()``'s output, the shapes autograd saved while a module of ``frozen`` ran,
    and the outputs of ``frozen``'s modules that carry autograd history."""
    inside: list[nn.Module] = []
    saved_inside, outputs_with_grad = [], []

    def enter(module, _args) -> None:
        inside.append(module)

    def leave(module, _args, output) -> None:  # None: the output stays as it is
        inside.pop()
        tensors = [output] if isinstance(output, torch.Tensor) else [
            t for t in (output if isinstance(output, tuple) else getattr(output, "values",
                                                                         lambda: [])())
            if isinstance(t, torch.Tensor)]
        outputs_with_grad.extend(t for t in tensors if t.requires_grad or t.grad_fn)

    def pack(tensor):
        if inside:
            saved_inside.append(tuple(tensor.shape))
        return tensor

    handles = [m.register_forward_pre_hook(enter) for m in frozen.modules()]
    handles += [m.register_forward_hook(leave) for m in frozen.modules()]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            output = run_forward()
    finally:
        for handle in handles:
            handle.remove()
    return output, saved_inside, outputs_with_grad


def test_backbone_saves_nothing_for_backward(minilm_backbone, text_batch):
    model, frozen, _ = prepared(minilm_backbone)
    logits, saved_inside, outputs_with_grad = _watching_frozen(frozen,
                                                               lambda: model(text_batch))
    assert logits.requires_grad
    assert saved_inside == [] and outputs_with_grad == []

    # Everything saved is the side network's and the head's: run those alone on the
    # backbone's block outputs (taken here with forward hooks, without autograd) and count.
    blocks = frozen.encoder.encoder.layer
    taps: list[torch.Tensor] = []
    handles = [blocks[0].register_forward_pre_hook(lambda _m, args: taps.append(args[0]))]
    handles += [b.register_forward_hook(lambda _m, _a, out: taps.append(out)) for b in blocks]
    with torch.no_grad():
        pooled = frozen(**text_batch)
    for handle in handles:
        handle.remove()
    side = next(m for m in model.modules() if m not in set(frozen.modules())
                and hasattr(m, "gate_alpha"))
    alone = _saved_bytes(model, lambda: model.task_head(
        side(taps, text_batch["attention_mask"], pooled)))
    whole = _saved_bytes(model, lambda: model(text_batch))
    assert whole == alone > 0


def test_saved_activations_far_below_full_and_lora(minilm_backbone, text_batch):
    measured = {}
    for strategy in ("full", "lora", "lst"):
        model, _, _ = prepared(minilm_backbone, strategy)
        measured[strategy] = _saved_bytes(model, lambda m=model: m(text_batch).sum())
    assert measured["lst"] * 3 < measured["lora"] <= measured["full"], measured


def test_dropout_at_the_backbones_rates_while_training(minilm_backbone, text_batch):
    """The side blocks drop out at the rates of the encoder's config, and the frozen encoder
    drops out too while training (as the reference's frozen T5 does); in eval mode, and with
    ``dropout=False`` in training, the output is the same at every call."""
    config = minilm_backbone.module.encoder.config
    assert config.hidden_dropout_prob > 0 and config.attention_probs_dropout_prob > 0
    model, frozen, _ = prepared(minilm_backbone, dropout=True)
    blocks = [m for m in model.modules() if hasattr(m, "query") and hasattr(m, "fc1")]
    assert len(blocks) == config.num_hidden_layers
    for block in blocks:
        assert block.attention_drop.p == config.attention_probs_dropout_prob
        assert block.output_drop.p == config.hidden_dropout_prob

    def twice(module, *args, **kwargs):
        with torch.no_grad():
            return module(*args, **kwargs), module(*args, **kwargs)

    assert not torch.allclose(*twice(frozen, **text_batch))  # the backbone's own dropout
    assert not torch.allclose(*twice(model, text_batch))
    frozen.eval()  # the backbone's dropout off: what still varies is the side's own
    assert not torch.allclose(*twice(model, text_batch))
    assert torch.equal(*twice(model.eval(), text_batch))
    quiet, quiet_frozen, _ = prepared(minilm_backbone)  # the default: no dropout
    assert torch.equal(*twice(quiet_frozen, **text_batch))
    assert torch.equal(*twice(quiet, text_batch))


def test_frozen_batch_norm_keeps_its_pretrained_statistics():
    """``model.train()`` on its own (a user's loop over a loaded model, without the engine's
    ``train_mode``) puts the frozen backbone in training mode for its dropout; its BatchNorm
    layers must not follow, or their running statistics would drift from the pre-trained
    ones. The side's own BatchNorm layers train and do move."""
    from adaptlab.backbones.offline import efficientnet_lite0

    model, _, _ = prepared(efficientnet_lite0(), dropout=True)
    model.train()
    before = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    frozen = {n for n in before if n.startswith("backbone.frozen.")}
    torch.manual_seed(0)
    model(torch.rand(2, 3, 32, 32))
    after = dict(model.named_buffers())
    moved = {n for n, b in before.items() if not torch.equal(b, after[n])}
    assert frozen and moved and not moved & frozen, sorted(moved & frozen)[:3]
    assert all(n.startswith("backbone.side.") for n in moved)


def test_refusals_name_the_option_and_the_backbone(tmp_path):
    data = write_colour_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "refused"
    with pytest.raises(AdaptlabError, match=r"reduction=0 .*minimum 1"):
        run(RunConfig(domain="wildlife", data=str(data), strategy="lst", out=str(out),
                      device="cpu", strategy_options={"reduction": 0}), progress=False)
    assert not out.exists()
    with pytest.raises(AdaptlabError, match=r"pruning='taylor' is not one of \['magnitude', 'fisher'\]"):
        run(RunConfig(domain="wildlife", data=str(data), strategy="lst", out=str(out),
                      device="cpu", strategy_options={"pruning": "taylor"}), progress=False)
    assert not out.exists()

    # A backbone no family fits is refused from the built model, also before the folder.
    rng = np.random.default_rng(0)
    clouds = tmp_path / "clouds"
    for name in ("a", "b"):
        (clouds / name).mkdir(parents=True)
        for i in range(3):
            np.savetxt(clouds / name / f"{i}.xyz", rng.normal(size=(300, 3)), fmt="%.4f")
    with pytest.raises(AdaptlabError, match=r"backbone DGCNN .*families that work: hf-encoder, "
                                            r"timm-vit, point-transformer, timm-cnn, fracast$"):
        run(RunConfig(domain="pointcloud", data=str(clouds), backbone="dgcnn", strategy="lst",
                      out=str(out), device="cpu"), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("builder", ["fracast", "fracast_features"])
def test_fracast_ladder_starts_as_the_frozen_model_and_saves_nothing_of_it(builder):
    """Fracast's ladder (one rung per call of its shared block): before training the task
    model's output equals the frozen model's exactly (the side's correction starts at zero),
    the backbone saves nothing for backward, only the side network and head get gradients,
    and every side stage is the backbone's block at the same channels as the side's norm."""
    from adaptlab.backbones import fracast
    from adaptlab.tasks.classification import ClassificationModel
    from adaptlab.tasks.forecasting import ForecastModel

    backbone = getattr(fracast, builder)()
    core = backbone.module.core
    torch.manual_seed(0)
    context, observed = torch.rand(3, core.W), torch.ones(3, core.W, dtype=torch.bool)
    observed[0, :700] = False

    def task_model():
        if builder == "fracast":
            return ForecastModel(copy.deepcopy(backbone.module),
                                 copy.deepcopy(backbone.pretrained_head), 12)
        return ClassificationModel(copy.deepcopy(backbone.module),
                                   nn.Linear(backbone.num_features, 3))

    plain = task_model()
    batch = {"context": context, "observed": observed}
    chosen = get_strategy_class("lst").from_options({})
    layer_map = backbone.layer_map.prefixed("backbone")
    layer_map.head = "task_head"
    model = task_model()
    model.task_head.load_state_dict(plain.task_head.state_dict())
    chosen.check(layer_map)
    model = chosen.setup(model, layer_map)
    model.train()
    chosen.train_mode(model)
    frozen = model.backbone.frozen
    out, saved_inside, outputs_with_grad = _watching_frozen(frozen, lambda: model(batch))
    with torch.no_grad():
        expected = plain(batch)
    assert torch.equal(out, expected) and out.requires_grad
    assert saved_inside == [] and outputs_with_grad == []
    out.float().square().mean().backward()
    assert all(p.grad is None for p in frozen.parameters())
    side = model.backbone.side
    assert all(p.grad is not None for p in side.parameters())
    assert all(p.grad is not None for p in model.task_head.parameters())
    assert len(side.blocks) == len(core.dilations()) == 10

    # The side's channels, read off its final norm, are 1/8 of the backbone's ...
    units = torch.tensor([int(torch.nonzero(core.norm.weight == w)[0]) for w in side.norm.weight])
    assert len(units) == core.d // 8 and len(set(units.tolist())) == len(units)
    # ... and every stage holds the backbone's block and FiLM weights at those channels.
    for stage, dilation in zip(side.blocks, core.dilations(), strict=True):
        assert stage.dilation == dilation
        block = core.block
        assert torch.equal(stage.block.pw.weight, block.pw.weight[units][:, units])
        assert torch.equal(stage.block.dw_weight, block.dw_weight[units])
        assert torch.equal(stage.block.norm1.weight, block.norm1.weight[units])
        gamma_beta = torch.cat([units, core.d + units])
        assert torch.equal(stage.scale.to_gb.weight, core.scale.to_gb.weight[gamma_beta])


# -- one trained run (efficientnet_lite0, images), shared by the tests below -------------------
class TrainableSetProbe(EngineCallback):
    """At every optimizer step: which parameters train, hold a gradient, sit in the optimizer."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_before_optimizer_step(self, ctx) -> None:
        frozen = next(m for m in ctx.model.modules() if type(m).__name__ == "EfficientNet")
        frozen_ids = {id(p) for p in frozen.parameters()}
        self.steps.append({
            "frozen": [(p.requires_grad, p.grad is not None) for p in frozen.parameters()],
            "others": [(n, p.requires_grad, p.grad is not None)
                       for n, p in ctx.model.named_parameters() if id(p) not in frozen_ids],
            "optimized": {id(p) for p in ctx.optimizer.parameters()} & frozen_ids,
        })


def _config(data, out) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy="lst", out=str(out),
                     device="cpu", epochs=1, image_size=32, batch_size=2, lr=3e-3)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("lst") / "data", per_class=4)


@pytest.fixture(scope="module")
def trained(image_data, tmp_path_factory):
    probe = TrainableSetProbe()
    holder = {}

    def attach(trainer):
        trainer.callbacks.append(probe)
        holder["trainer"] = trainer

    result = run(_config(image_data, tmp_path_factory.mktemp("lst") / "ref"), progress=False,
                 on_trainer=attach)
    return result, probe, holder["trainer"]


def test_exactly_the_side_network_and_head_train_at_every_step(trained):
    result, probe, _ = trained
    assert len(probe.steps) == result.costs["optimizer_steps"] >= 3
    for step in probe.steps:
        assert step["frozen"] and not any(rg or g for rg, g in step["frozen"])
        assert step["optimized"] == set()
        untrained = [n for n, rg, g in step["others"] if not (rg and g)]
        assert untrained == [] and any(n.startswith("task_head.") for n, _, _ in step["others"])
    memory = result.costs["memory_bytes"]
    assert 0 < memory["activations"] and memory["gradients"] < memory["parameters"] / 10


def test_reloads_to_its_logits_and_refuses_a_merge(trained):
    from adaptlab import load_run
    from adaptlab.tasks.base import move_to

    result, _, trainer = trained
    batch = move_to(next(iter(trainer.eval_loaders["test"]))[0], "cpu")
    with torch.no_grad():
        expected = trainer.unwrapped.eval()(batch)
    loaded = load_run(result.run_dir, device="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.model(batch), expected)
    with pytest.raises(AdaptlabError, match="cannot be folded into the base model"):
        loaded.strategy.merged_state_dict(loaded.model)


def test_resume_mid_epoch_is_bit_identical(trained, image_data, tmp_path):
    reference, _, _ = trained
    holder = {}

    def stop_early(event):
        if event["event"] == "step" and event["global_step"] == 2:
            holder["trainer"].request_stop()

    stopped = run(_config(image_data, tmp_path / "stopped"), progress=False,
                  subscribers=[stop_early], on_trainer=lambda t: holder.setdefault("trainer", t))
    assert stopped.metrics == {}
    assert reference.costs["optimizer_steps"] > 2  # the stop fell mid-epoch
    resumed = run(RunConfig(domain="wildlife", out=str(tmp_path / "stopped")), resume=True,
                  progress=False)
    final = load_file(str(reference.run_dir / "weights.safetensors"))
    again = load_file(str(resumed.run_dir / "weights.safetensors"))
    assert final.keys() == again.keys() and any("side" in k for k in final)
    for name in final:
        assert torch.equal(final[name], again[name]), name
    assert resumed.metrics["final"] == reference.metrics["final"]


def test_export_holds_the_side_network_and_reproduces_the_run(trained, tmp_path):
    import json

    from adaptlab.export.api import export_run
    from adaptlab.export.rebuild import load_exported

    result, _, trainer = trained
    with pytest.raises(AdaptlabError, match="cannot be folded into the base model"):
        export_run(result.run_dir, tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged").exists()
    summary = export_run(result.run_dir, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())["adaptlab"]
    assert config["strategy"] == "lst" and config["strategy_structure"] is True
    assert any("side" in k for k in load_file(str(tmp_path / "export" / "model.safetensors")))
    # The folder alone, rebuilt as a user would, gives the trained model's outputs.
    batch = next(iter(trainer.eval_loaders["test"]))[0]
    with torch.no_grad():
        expected = trainer.unwrapped.eval()(batch)
        assert torch.equal(load_exported(tmp_path / "export")(batch), expected)
    assert summary["max_abs_diff"]["safetensors"] == 0.0


def test_a_run_recorded_before_the_last_gate_reloads_without_it(trained, tmp_path):
    """A run recorded before ``merge_last`` existed has neither the option nor its gate: it
    rebuilds the side network it trained (no last gate), not today's default."""
    import json
    import shutil

    from safetensors.torch import save_file

    from adaptlab import load_run
    from adaptlab.tasks.base import move_to

    result, _, trainer = trained
    old = tmp_path / "old"
    shutil.copytree(result.run_dir, old)
    config = json.loads((old / "config.json").read_text())
    assert config["strategy_options"].pop("merge_last") is True
    (old / "config.json").write_text(json.dumps(config))
    weights = load_file(str(old / "weights.safetensors"))
    gate = next(k for k in weights if k.endswith("merge_alpha"))
    save_file({k: v for k, v in weights.items() if k != gate}, str(old / "weights.safetensors"))

    model = copy.deepcopy(trainer.unwrapped).eval()
    model.get_parameter(gate).data.fill_(1e4)  # the old model: the side network's output alone
    batch = move_to(next(iter(trainer.eval_loaders["test"]))[0], "cpu")
    loaded = load_run(old, device="cpu")
    assert loaded.strategy.config.merge_last is False
    with torch.no_grad():
        assert torch.equal(loaded.model(batch), model(batch))


def test_a_fisher_pruned_run_reloads_to_its_logits(trained, image_data, tmp_path):
    """The Fisher ranking runs once, on the training data at the run's start; a reload ranks
    by magnitude (no data at hand) and must still rebuild the side the run trained."""
    import json

    from adaptlab import load_run

    config = _config(image_data, tmp_path / "fisher")
    config.strategy_options = {"pruning": "fisher", "fisher_samples": 5}
    result = run(config, progress=False)
    events = [json.loads(line) for line in
              (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["samples"] for e in events if e["event"] == "strategy_init"] == [5]
    assert result.costs["reload_max_abs_diff"] == 0.0
    loaded = load_run(result.run_dir, device="cpu")
    weights = load_file(str(result.run_dir / "weights.safetensors"))
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items() if ".side." in k)
    # The Fisher start is not magnitude pruning's: the same run without it trained another
    # side.
    plain = load_file(str(trained[0].run_dir / "weights.safetensors"))
    assert any(not torch.equal(plain[k], weights[k]) for k in weights if ".side.blocks." in k)

