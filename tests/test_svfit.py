"""SVFit (svfit): the adapted model starts exactly at the pre-trained one, its singular
vectors are the weights' own, exactly the top-r singular values (r by energy, counted here
from the weights' spectra) and the head train, a run reloads from its singular values alone,
the merged weights give the adapted model's outputs, bad options are refused by name."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from adaptlab.backbones.backbone import Backbone
from adaptlab.backbones.hf_encoders import MeanPooledEncoder
from adaptlab.backbones.layer_map import layer_map_from_hf_encoder
from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.strategies.base import count_parameters
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model
from conftest import write_colour_folder

pytestmark = pytest.mark.slow

HIDDEN, LAYERS, CLASSES = 32, 2, 3


def _tiny_bert() -> Backbone:
    """A 2-layer BERT from a local config (no download), seeded: every build is the same
    "pre-trained" model."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=2, intermediate_size=2 * HIDDEN,
                        max_position_embeddings=32)
    torch.manual_seed(0)
    encoder = BertModel(config)
    return Backbone(name="tiny-bert", module=MeanPooledEncoder(encoder), num_features=HIDDEN,
                    layer_map=layer_map_from_hf_encoder(encoder).prefixed("encoder"),
                    feature_layout="tokens")


def _fresh(options: dict | None = None):
    """(plain task model, layer map, strategy) with a head drawn from a fixed seed."""
    strategy = get_strategy_class("svfit").from_options(options or {})
    torch.manual_seed(1)
    model, layer_map = build_model(_tiny_bert(), CLASSES, strategy.config)
    return model, layer_map, strategy


def _adapted(options: dict | None = None):
    model, layer_map, strategy = _fresh(options)
    plain = copy.deepcopy(model)
    return strategy.setup(model, layer_map), plain, strategy


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 64, (4, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _bert_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear inside the encoder's layers: the targets, named from the model itself."""
    return {name: module for name, module in model.named_modules()
            if ".encoder.layer." in name and isinstance(module, nn.Linear)}


def _energy_rank(weight: torch.Tensor, energy: float) -> int:
    values = torch.linalg.svdvals(weight.detach().double())
    share = torch.cumsum(values**2, 0) / (values**2).sum()
    return min(int((share < energy).sum()) + 1, values.numel())


def _outputs(model: nn.Module, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)


def _train_a_little(model: nn.Module, batch, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        model(batch).logsumexp(1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()


def test_starts_at_the_pretrained_model_with_the_weights_own_singular_triplets(batch):
    adapted, plain, _ = _adapted()
    expected = _outputs(plain, batch)
    assert torch.equal(_outputs(adapted, batch), expected)
    originals = _bert_linears(plain)
    adapted_layers = dict(adapted.named_modules())
    assert len(originals) == 6 * LAYERS
    for name, original in originals.items():
        layer = adapted_layers[name]
        weight = original.weight.detach()
        assert torch.equal(layer.weight, weight), name  # the residual + top-r part, rebuilt
        shift = layer.parametrizations.weight[0]
        values = torch.linalg.svdvals(weight.double())
        rank = _energy_rank(weight, 0.99)
        assert torch.allclose(shift.pretrained_values.double(), values[:rank], rtol=1e-5)
        # W V_r = U_r diag(S_r) and U_r^T W = diag(S_r) V_r^T: the frozen vectors are the
        # weight's own top-r singular vectors.
        scale = float(values[0])
        assert torch.allclose(weight @ shift.right, shift.left * shift.pretrained_values,
                              atol=1e-5 * scale)
        assert torch.allclose(shift.left.T @ weight,
                              shift.pretrained_values[:, None] * shift.right.T, atol=1e-5 * scale)
        residual = weight.double() - (shift.left.double() * values[:rank]) @ shift.right.double().T
        # What is left is the rest of the spectrum: its norm is the dropped energy.
        dropped = float((values[rank:] ** 2).sum().sqrt())
        assert abs(float(torch.linalg.matrix_norm(residual)) - dropped) <= 1e-5 * scale


def test_trains_exactly_the_top_singular_values_and_the_head():
    adapted, plain, _ = _adapted()
    ranks = {name: _energy_rank(m.weight, 0.99) for name, m in _bert_linears(plain).items()}
    assert 0 < sum(ranks.values()) < sum(min(m.weight.shape)
                                         for m in _bert_linears(plain).values())
    head = HIDDEN * CLASSES + CLASSES
    assert count_parameters(adapted)[0] == sum(ranks.values()) + head
    trained = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trained == {f"{n}.parametrizations.weight.0.singular_values" for n in ranks} | {
        "task_head.weight", "task_head.bias"}

    # rank=k trains k per matrix; train_residual_rank adds the next values after r.
    set_rank, _, _ = _adapted({"rank": 3, "train_residual_rank": 2})
    assert count_parameters(set_rank)[0] == 5 * len(ranks) + head
    by_energy, _, _ = _adapted({"train_residual_rank": 2})
    assert count_parameters(by_energy)[0] == sum(
        min(r + 2, HIDDEN) for r in ranks.values()) + head


def test_rank_grows_with_the_energy_kept():
    _, plain, _ = _adapted()
    layers = _bert_linears(plain)
    counts = []
    for energy in (0.3, 0.6, 0.9, 0.99, 1.0):
        model, layer_map, strategy = _fresh({"energy": energy})
        expected = {name: _energy_rank(m.weight, energy) for name, m in layers.items()}
        assert strategy.ranks(model, layer_map) == expected
        counts.append(sum(expected.values()))
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert counts[-1] == sum(min(m.weight.shape) for m in layers.values())  # energy 1: all


def test_reloads_from_the_singular_values_alone_and_merges(batch, tmp_path):
    adapted, plain, strategy = _adapted()
    _train_a_little(adapted, batch)
    trained = _outputs(adapted, batch)
    assert not torch.allclose(trained, _outputs(plain, batch), atol=1e-4)

    strategy.save_final(adapted, tmp_path)
    saved = load_file(str(tmp_path / "weights.safetensors"))
    values = {k for k in saved if k.endswith(".singular_values")}
    assert set(saved) - values == {"task_head.weight", "task_head.bias"}
    assert sum(saved[k].numel() for k in values) == count_parameters(adapted)[0] - (
        HIDDEN * CLASSES + CLASSES)

    model, layer_map, fresh_strategy = _fresh()
    reloaded = fresh_strategy.apply(model, layer_map)
    fresh_strategy.load_final(reloaded, tmp_path)
    assert torch.allclose(_outputs(reloaded, batch), trained, atol=1e-6)

    # Merged: a plain model (no strategy) holding the folded weights gives the same outputs.
    merged = strategy.merged_state_dict(adapted)
    target, _, _ = _fresh()
    target.load_state_dict(merged, strict=True)
    assert torch.allclose(_outputs(target, batch), trained, atol=1e-5)

    # Unadapted in place: the pre-trained weights with the trained head, then back.
    with_head = copy.deepcopy(plain)
    with_head.task_head.load_state_dict(adapted.task_head.state_dict())
    with strategy.unadapted(adapted, "task_head") as before:
        assert before is adapted
        assert torch.allclose(_outputs(before, batch), _outputs(with_head, batch), atol=1e-6)
    assert torch.equal(_outputs(adapted, batch), trained)


def test_refuses_bad_options_and_targets():
    strategy = get_strategy_class("svfit")
    for options, message in (
            ({"energy": 0}, r"energy=0(\.0)? is below the minimum 0.01"),
            ({"energy": 1.5}, r"energy=1.5 is above the maximum 1.0"),
            ({"energy": "nan"}, r"energy=nan is not a number"),
            ({"rank": -1}, r"rank=-1 is below the minimum 0"),
            ({"train_residual_rank": -2}, r"train_residual_rank=-2 is below the minimum 0"),
            ({"rnak": 4}, r"unknown key 'rnak'")):
        with pytest.raises(AdaptlabError, match=message):
            strategy.from_options(options)
    model, layer_map, chosen = _fresh({"targets": "encoder.nowhere"})
    with pytest.raises(AdaptlabError, match=r"target 'encoder.nowhere' is not a module"):
        chosen.check_model(model, layer_map)
    norm = "backbone.encoder.encoder.layer.0.output.LayerNorm"
    model, layer_map, chosen = _fresh({"targets": norm})
    with pytest.raises(AdaptlabError, match=rf"target '{norm}' is a LayerNorm; SVFit adapts"):
        chosen.check_model(model, layer_map)


# -- one real run (efficientnet_lite0 on generated photos: convolutions as matrices) ---------
def _dense_convs(model: nn.Module) -> list[str]:
    """The CNN's groups=1 convolutions after its stem: its blocks' and its conv_head."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1
            and (name.startswith("backbone.blocks.") or name == "backbone.conv_head")]


def test_a_run_reloads_exports_merged_and_refuses_before_writing(tmp_path):
    from adaptlab import load_run
    from adaptlab.export.api import export_run
    from adaptlab.export.rebuild import load_exported
    from adaptlab.tasks.base import move_to

    data = write_colour_folder(tmp_path / "data", per_class=4)
    holder = {}
    config = RunConfig(domain="wildlife", data=str(data), strategy="svfit", out=str(tmp_path / "run"),
                       device="cpu", epochs=1, image_size=32, batch_size=4, lr=3e-2,
                       strategy_options={"energy": 0.9})
    result = run(config, progress=False, on_trainer=lambda t: holder.setdefault("trainer", t))
    trainer = holder["trainer"]
    assert result.costs["reload_max_abs_diff"] <= 1e-5
    saved = load_file(str(result.run_dir / "weights.safetensors"))
    kinds = {k.rsplit(".", 1)[-1] for k in saved}
    assert kinds <= {"singular_values", "weight", "bias", "running_mean", "running_var",
                     "num_batches_tracked"}
    convs = _dense_convs(trainer.unwrapped)
    assert len(convs) > 20
    assert {k for k in saved if k.endswith(".singular_values")} == {
        f"{name}.parametrizations.weight.0.singular_values" for name in convs}
    assert not any(k.endswith("parametrizations.weight.original") for k in saved)

    batch = move_to(next(iter(trainer.eval_loaders["test"]))[0], "cpu")
    expected = _outputs(trainer.unwrapped, batch)
    loaded = load_run(result.run_dir, device="cpu")
    assert torch.allclose(_outputs(loaded.model, batch), expected, atol=1e-5)
    with loaded.unadapted() as before:
        assert not torch.allclose(_outputs(before, batch), expected, atol=1e-4)

    summary = export_run(result.run_dir, tmp_path / "export", merge=True)
    assert summary["merged"] is True
    plain = load_exported(tmp_path / "export")
    assert not any("parametrizations" in k for k in plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain(batch), expected, atol=1e-4)

    refused = tmp_path / "refused"
    with pytest.raises(AdaptlabError, match=r"target 'backbone.blocks.0.0.conv_dw' is a "
                                            r"Conv2d; SVFit adapts"):
        run(RunConfig(domain="wildlife", data=str(data), strategy="svfit", out=str(refused),
                      device="cpu", strategy_options={"targets": "backbone.blocks.0.0.conv_dw"}),
            progress=False)
    assert not refused.exists()
