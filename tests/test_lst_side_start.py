"""Where ladder side-tuning's side network starts: gates at one half, side blocks that are the
backbone's own weights at the units magnitude pruning or (``pruning=fisher``) the Fisher
information selects, the last gate mixing in the backbone's features, and an up-projection
that can start at zero."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model
from lst_models import prepared

pytestmark = pytest.mark.slow


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return torch.topk(scores, keep).indices.sort().values


def test_gates_start_at_one_half_and_side_blocks_are_the_pruned_backbone(minilm_backbone):
    reduction = 8
    model, frozen, _ = prepared(minilm_backbone, reduction=reduction)
    layers = list(frozen.encoder.encoder.layer)
    side = next(m for m in model.modules() if hasattr(m, "gate_alpha"))
    gates = torch.sigmoid(side.gate_alpha / 0.1)
    assert torch.equal(gates, torch.full((len(layers),), 0.5))

    def weights(layer):
        a = layer.attention
        return (a.self.query.weight, a.self.key.weight, a.self.value.weight,
                a.output.dense.weight, layer.intermediate.dense.weight, layer.output.dense.weight)

    # Residual units: L1 of the columns reading them and the rows writing them, all layers.
    width = layers[0].attention.output.dense.out_features
    scores = sum(q.abs().sum(0) + k.abs().sum(0) + v.abs().sum(0) + fc1.abs().sum(0)
                 + o.abs().sum(1) + fc2.abs().sum(1)
                 for q, k, v, o, fc1, fc2 in map(weights, layers))
    hidden = _top(scores.detach(), width // reduction)
    side_blocks = [m for m in side.modules() if hasattr(m, "query") and hasattr(m, "fc1")]
    assert len(side_blocks) == len(layers)
    heads = layers[0].attention.self.num_attention_heads
    for layer, block in zip(layers, side_blocks, strict=True):
        q, k, v, o, fc1, fc2 = (w.detach() for w in weights(layer))
        head_dim = q.shape[0] // heads
        unit = (q.abs().sum(1) + k.abs().sum(1) + v.abs().sum(1) + o.abs().sum(0))
        attention = torch.cat([_top(unit[h * head_dim:(h + 1) * head_dim],
                                    head_dim // reduction) + h * head_dim for h in range(heads)])
        ffn = _top(fc1.abs().sum(1) + fc2.abs().sum(0), fc1.shape[0] // reduction)
        assert torch.equal(block.query.weight, q[attention][:, hidden])
        assert torch.equal(block.value.weight, v[attention][:, hidden])
        assert torch.equal(block.proj.weight, o[hidden][:, attention])
        assert torch.equal(block.fc1.weight, fc1[ffn][:, hidden])
        assert torch.equal(block.fc2.weight, fc2[hidden][:, ffn])
        assert torch.equal(block.norm2.weight, layer.output.LayerNorm.weight.detach()[hidden])

    # apply() on a fresh model builds the same side network whatever the global RNG says.
    torch.manual_seed(12345)
    again, _, _ = prepared(minilm_backbone, reduction=reduction)
    first = {k: v for k, v in model.state_dict().items() if "side" in k}
    second = {k: v for k, v in again.state_dict().items() if "side" in k}
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_fisher_pruning_starts_the_side_from_the_units_with_the_most_fisher_information(
        minilm_backbone, text_batch):
    reduction = 8
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    chosen = get_strategy_class("lst").from_options({"pruning": "fisher"})
    model, layer_map = build_model(copy.deepcopy(minilm_backbone), 3, chosen.config)
    model = chosen.setup(model, layer_map)
    frozen = model.backbone.frozen
    magnitude = copy.deepcopy(model.backbone.side.state_dict())
    layers = list(frozen.encoder.encoder.layer)

    def weights(layer):
        a = layer.attention
        return [a.self.query.weight, a.self.key.weight, a.self.value.weight,
                a.output.dense.weight, layer.intermediate.dense.weight, layer.output.dense.weight]

    # The definition, computed here on its own: each weight's squared gradient of the loss
    # of one sample through the frozen backbone and the head, summed over the samples.
    every = [w for layer in layers for w in weights(layer)]
    fisher = [torch.zeros_like(w) for w in every]
    model.eval()
    for i in range(len(labels)):
        one = {k: v[i:i + 1] for k, v in text_batch.items()}
        with torch.enable_grad():
            for w in every:
                w.requires_grad_(True)
            loss = nn.functional.cross_entropy(model.task_head(frozen(**one)), labels[i:i + 1])
            grads = torch.autograd.grad(loss, every)
            for w in every:
                w.requires_grad_(False)
        for total, grad in zip(fisher, grads, strict=True):
            total += grad.square()
    per_layer = [fisher[i:i + 6] for i in range(0, len(fisher), 6)]
    width = layers[0].attention.output.dense.out_features
    scores = sum(q.sum(0) + k.sum(0) + v.sum(0) + fc1.sum(0) + o.sum(1) + fc2.sum(1)
                 for q, k, v, o, fc1, fc2 in per_layer)
    hidden = _top(scores, width // reduction)

    facts = chosen.init_from_data(model, layer_map, [(text_batch, labels)],
                                  nn.functional.cross_entropy, "cpu")
    assert facts == {"pruning": "fisher", "samples": 6}
    side = model.backbone.side
    blocks = [m for m in side.modules() if hasattr(m, "query") and hasattr(m, "fc1")]
    for layer, block, (fq, fk, fv, fo, ffc1, ffc2) in zip(layers, blocks, per_layer,
                                                          strict=True):
        q, _, v, o, fc1, fc2 = (w.detach() for w in weights(layer))
        heads = layer.attention.self.num_attention_heads
        head_dim = q.shape[0] // heads
        unit = fq.sum(1) + fk.sum(1) + fv.sum(1) + fo.sum(0)
        attention = torch.cat([_top(unit[h * head_dim:(h + 1) * head_dim],
                                    head_dim // reduction) + h * head_dim for h in range(heads)])
        ffn = _top(ffc1.sum(1) + ffc2.sum(0), fc1.shape[0] // reduction)
        assert torch.equal(block.query.weight, q[attention][:, hidden])
        assert torch.equal(block.value.weight, v[attention][:, hidden])
        assert torch.equal(block.proj.weight, o[hidden][:, attention])
        assert torch.equal(block.fc1.weight, fc1[ffn][:, hidden])
        assert torch.equal(block.fc2.weight, fc2[hidden][:, ffn])
    # Another start than magnitude pruning's, with the same random projections, and nothing
    # of the backbone left trainable or holding a gradient.
    after = side.state_dict()
    assert not torch.equal(after["blocks.0.fc1.weight"], magnitude["blocks.0.fc1.weight"])
    assert torch.equal(after["down.0.weight"], magnitude["down.0.weight"])
    assert all(not p.requires_grad and p.grad is None for p in frozen.parameters())
    assert all(p.requires_grad for p in side.parameters())


def test_merge_last_mixes_in_the_backbones_own_features(minilm_backbone, text_batch):
    model, frozen, _ = prepared(minilm_backbone)
    model.eval()
    side = next(m for m in model.modules() if hasattr(m, "gate_alpha"))
    assert torch.equal(torch.sigmoid(side.merge_alpha / 0.1), torch.tensor([0.5]))
    with torch.no_grad():
        head_alone = model.task_head(frozen(**text_batch))  # head-only's model
        mixed = model(text_batch)
        side.merge_alpha.fill_(-1e4)  # the last gate shut: the backbone's features alone
        shut = model(text_batch)
        side.merge_alpha.fill_(1e4)  # wide open: the side network's alone
        opened = model(text_batch)
    assert torch.allclose(shut, head_alone, atol=1e-6)
    assert not torch.allclose(mixed, head_alone, atol=1e-3)
    unmerged, _, _ = prepared(minilm_backbone, merge_last=False)
    assert not any("merge" in name for name, _ in unmerged.named_parameters())
    unmerged.task_head.load_state_dict(model.task_head.state_dict())  # the side is seeded
    with torch.no_grad():
        assert torch.allclose(unmerged.eval()(text_batch), opened, atol=1e-6)


def test_a_zero_started_up_projection_adds_nothing_until_it_trains(minilm_backbone, text_batch):
    model, frozen, _ = prepared(minilm_backbone, up_init="zero")
    random_up, _, _ = prepared(minilm_backbone)
    side = model.backbone.side
    with torch.no_grad():
        # At the start the head reads half of the backbone's features (the last gate at one
        # half) and nothing of the side; the rest of the side is the default's, draw for draw.
        expected = model.task_head(0.5 * frozen(**text_batch))
        assert torch.allclose(model.eval()(text_batch), expected, atol=1e-6)
    state, default = side.state_dict(), random_up.backbone.side.state_dict()
    assert [k for k in state if not torch.equal(state[k], default[k])] == ["up.weight", "up.bias"]
    # One step moves the up-projection off zero: the side starts to add to the features.
    model.train()
    nn.functional.cross_entropy(model(text_batch), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert side.up.weight.grad.abs().sum() > 0
