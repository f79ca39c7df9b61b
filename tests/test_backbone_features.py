"""Layer maps (containers, root-level parameters, the neck), freezing on a timm ViT, and the
uniform feature interface (``forward_features`` and block outputs) on every backbone family.

Expected values come from the models themselves (their attributes, timm's and Hugging Face's
own intermediate outputs, forwards written out by hand), not from the layer map under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.backbones.features import block_outputs, feature_map
from adaptlab.backbones.timm_backbones import timm_backbone

VIT = "vit_tiny_patch16_224"


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    backbone = timm_backbone(VIT, pretrained=False)
    backbone.module.eval()
    return backbone


@pytest.fixture(scope="module")
def lite0():
    from adaptlab.backbones.offline import efficientnet_lite0

    backbone = efficientnet_lite0()
    backbone.module.eval()
    return backbone


@pytest.fixture(scope="module")
def minilm():
    from adaptlab.backbones.hf_encoders import minilm

    backbone = minilm()
    backbone.module.eval()
    return backbone


def _apply_freeze(model: nn.Module, layer_map, k: int) -> None:
    from adaptlab.strategies.registry import get_strategy_class

    strategy = get_strategy_class("freeze").from_options({"k": k})
    strategy.check(layer_map)
    strategy.setup(model, layer_map)  # a new run: apply, then select what trains


@pytest.mark.parametrize("k", [2, -2, 0, 12])
def test_freeze_on_a_timm_vit_from_a_local_file_trains_the_top_blocks_norm_and_head(
        tmp_path, k):
    import timm
    from safetensors.torch import save_file

    from adaptlab.tasks.classification import build_model

    reference = timm.create_model(VIT, pretrained=False, num_classes=0)
    save_file(reference.state_dict(), str(tmp_path / "vit.safetensors"))
    backbone = timm_backbone(VIT, weights=tmp_path / "vit.safetensors")
    model, layer_map = build_model(backbone, 4)
    _apply_freeze(model, layer_map, k)

    # ViT-Tiny has 12 blocks; k counts frozen blocks from the bottom (negative: from the top).
    first_trained = 12 + k if k < 0 else k
    vit_model = model.backbone
    expected = sum(_numel(vit_model.blocks[i]) for i in range(first_trained, 12))
    if first_trained < 12:
        expected += _numel(vit_model.norm)
    expected += _numel(model.task_head)
    assert model.task_head.weight.shape == (4, 192)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    # The stem (patch projection, class token, position embedding) never trains.
    assert not vit_model.cls_token.requires_grad and not vit_model.pos_embed.requires_grad
    assert not any(p.requires_grad for p in vit_model.patch_embed.parameters())


def _coverage(model: nn.Module, layer_map) -> dict[str, int]:
    """How many entries of embeddings, blocks and neck hold each parameter."""
    entries = layer_map.embeddings + [e for block in layer_map.blocks for e in block] \
        + layer_map.neck
    return {name: sum(1 for e in entries if name == e or name.startswith(e + "."))
            for name, _ in model.named_parameters()}


def _point_and_field_backbones():
    from adaptlab.backbones import field_cnn, field_unet, point_nets

    return [point_nets.dgcnn({"k": 8}), point_nets.point_transformer({}),
            field_cnn.field_cnn({"in_channels": 2, "periodic_lon": True}),
            field_unet.field_unet({"in_channels": 2, "periodic_lon": False})]


def test_layer_maps_hold_every_parameter_exactly_once(vit, lite0, minilm):
    backbones = [vit, lite0, minilm, *_point_and_field_backbones()]
    try:
        from adaptlab.backbones.fracast import fracast

        backbones.append(fracast())
    except ImportError:
        pass
    for backbone in backbones:
        layer_map = backbone.layer_map
        entries = layer_map.embeddings + [e for b in layer_map.blocks for e in b] + layer_map.neck
        assert "" not in entries, backbone.name
        assert all(block for block in layer_map.blocks), backbone.name
        counts = _coverage(backbone.module, layer_map)
        assert counts and all(count == 1 for count in counts.values()), \
            (backbone.name, {n: c for n, c in counts.items() if c != 1})
        layer_map.check(backbone.module)


def test_timm_vit_layer_map_places_root_tensors_in_the_stem_and_the_final_norm_in_the_neck(vit):
    layer_map = vit.layer_map
    assert {"cls_token", "pos_embed", "patch_embed"} <= set(layer_map.embeddings)
    assert layer_map.blocks == [[f"blocks.{i}"] for i in range(len(vit.module.blocks))]
    assert layer_map.neck == ["norm"]
    assert layer_map.bottom_modules(11) == layer_map.embeddings + [f"blocks.{i}"
                                                                    for i in range(11)]
    assert layer_map.bottom_modules(12)[-1] == "norm"
    prefixed = layer_map.prefixed("backbone", head="task_head")
    assert prefixed.neck == ["backbone.norm"] and "backbone.cls_token" in prefixed.embeddings
    assert prefixed.to_dict()["neck"] == ["backbone.norm"]


def test_efficientnet_lite0_blocks_are_its_inverted_residual_blocks(lite0):
    net = lite0.module
    stages = [len(stage) for stage in net.blocks]
    assert lite0.layer_map.num_blocks == sum(stages) == 16
    assert lite0.layer_map.neck == ["conv_head", "bn2"]
    # A stage of one block is one container; a longer stage is split into its blocks.
    assert lite0.layer_map.blocks[0] == ["blocks.0"]
    assert lite0.layer_map.blocks[1] == ["blocks.1.0"]


def test_vit_features_and_block_outputs_equal_timm_intermediates(vit):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = feature_map(vit, x)
        out = block_outputs(vit, x, [0, -1])
        final, intermediates = vit.module.forward_intermediates(
            x, indices=[0, 11], norm=False, output_fmt="NLC", return_prefix_tokens=True)
    assert features.shape == (2, 197, 192)
    torch.testing.assert_close(features, final)
    torch.testing.assert_close(out.features, final)
    for mine, (patches, prefix) in zip(out.blocks, intermediates, strict=True):
        torch.testing.assert_close(mine, torch.cat([prefix, patches], dim=1))
    torch.testing.assert_close(vit.forward_intermediates(x, [-1]).blocks[0], out.blocks[1])


def test_block_outputs_keep_gradients_and_remove_their_hooks(vit):
    x = torch.randn(1, 3, 224, 224)
    out = block_outputs(vit, x, [3])
    assert out.blocks[0].requires_grad
    out.blocks[0].sum().backward()
    assert vit.module.blocks[0].attn.qkv.weight.grad is not None
    vit.module.zero_grad(set_to_none=True)
    hooked = [m for m in vit.module.modules() if m._forward_hooks]
    assert not hooked
    with pytest.raises(RuntimeError):
        block_outputs(vit, torch.randn(1, 5, 224, 224), [0, 1])  # wrong channel count
    assert not [m for m in vit.module.modules() if m._forward_hooks]
    with pytest.raises(IndexError):
        block_outputs(vit, x, [12])


def test_minilm_block_outputs_equal_hidden_states(minilm):
    inputs = dict(minilm.tokenizer(["def add(a, b): return a + b", "x = 1"], padding=True,
                                   return_tensors="pt"))
    with torch.no_grad():
        out = block_outputs(minilm, inputs, [0, 2, -1])
        states = minilm.module.encoder(input_ids=inputs["input_ids"],
                                       attention_mask=inputs["attention_mask"],
                                       output_hidden_states=True).hidden_states
    assert len(states) == 7  # the embeddings and six layers
    for mine, i in zip(out.blocks, [0, 2, 5], strict=True):
        torch.testing.assert_close(mine, states[i + 1])
    torch.testing.assert_close(out.features, states[-1])
    assert out.features.shape == (2, inputs["input_ids"].shape[1], minilm.feature_dim)
    assert minilm.feature_layout == "tokens"


def test_efficientnet_lite0_last_block_output_equals_the_stem_and_blocks_run_by_hand(lite0):
    net = lite0.module
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = block_outputs(lite0, x, [-1])
        by_hand = net.blocks(net.bn1(net.conv_stem(x)))
        head = net.bn2(net.conv_head(by_hand))
    torch.testing.assert_close(out.blocks[0], by_hand)
    torch.testing.assert_close(out.features, head)
    assert out.features.shape == (2, lite0.feature_dim, 2, 2)
    assert lite0.feature_layout == "map"


def test_point_network_features_and_block_outputs():
    from adaptlab.backbones import point_nets

    backbone = point_nets.dgcnn({"k": 8})
    net = backbone.module.eval()
    points = torch.randn(2, 64, 3)
    with torch.no_grad():
        out = block_outputs(backbone, points, [0, -1])
        e0 = net.edges[0](points)
        e1 = net.edges[1](e0)
        e2 = net.edges[2](e1)
    assert backbone.feature_layout == "points"
    assert out.features.shape == (2, 64, backbone.feature_dim)
    torch.testing.assert_close(out.blocks[0], e1)
    torch.testing.assert_close(out.blocks[1], e2)
    # The per-point features start with the EdgeConv outputs, in order.
    torch.testing.assert_close(out.features[..., :e0.shape[-1] + e1.shape[-1] + e2.shape[-1]],
                               torch.cat([e0, e1, e2], dim=-1))

    transformer = point_nets.point_transformer({"patches": 8, "patch_size": 8})
    transformer.module.eval()
    with torch.no_grad():
        tokens = block_outputs(transformer, points, None)
    assert [tuple(t.shape) for t in tokens.blocks] == [(2, 8, 96)] * 4
    assert tokens.features.shape == (2, 64, transformer.feature_dim)


def test_field_unet_block_outputs_are_its_stages_run_by_hand():
    from adaptlab.backbones import field_unet

    backbone = field_unet.field_unet({"in_channels": 2, "periodic_lon": True})
    net = backbone.module.eval()
    x = torch.randn(2, 2, 9, 12)
    with torch.no_grad():
        out = block_outputs(backbone, x, None)
        s0 = net.stem(x)
        s1 = net.down1(s0)
        s2 = net.down2(s1)
        u1 = net.up1(torch.cat([F.interpolate(s2, size=s1.shape[-2:], mode="bilinear"), s1], 1))
        u2 = net.up2(torch.cat([F.interpolate(u1, size=s0.shape[-2:], mode="bilinear"), s0], 1))
    for mine, expected in zip(out.blocks, [s1, s2, u1, u2], strict=True):
        torch.testing.assert_close(mine, expected)
    torch.testing.assert_close(out.features, u2)
    assert backbone.feature_layout == "grid"
    assert out.features.shape == (2, backbone.feature_dim, 9, 12)


def test_fracast_features_are_the_normalised_last_block_output():
    # The fracast package and its weights come with the timeseries plugin, part of the
    # install: missing, they fail here rather than skip.
    from adaptlab.backbones import fracast

    backbone = fracast.fracast_features()
    backbone.module.eval()
    width = backbone.series.context_length
    inputs = {"context": torch.rand(2, width), "observed": torch.ones(2, width, dtype=torch.bool)}
    with torch.no_grad():
        out = block_outputs(backbone, inputs, [-1])
        pooled = backbone.module(**inputs)
    assert out.features.shape == (2, width, backbone.feature_dim)
    # The core ends with its norm (the neck) on the last application of its shared block.
    torch.testing.assert_close(backbone.module.core.norm(out.blocks[0]), out.features)
    torch.testing.assert_close(pooled[:, backbone.feature_dim:], out.features[:, -1])


def test_timm_vit_takes_other_image_sizes_and_is_unchanged_at_its_own(tmp_path):
    """``image_size`` works for a vision transformer as for a CNN (its position embeddings
    resampled per input), and at the model's own 224 px the features equal timm's fixed-size
    model with the same weights."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    fixed = timm.create_model(VIT, pretrained=False, num_classes=0).eval()
    save_file(fixed.state_dict(), str(tmp_path / "vit.safetensors"))
    ours = timm_backbone(VIT, weights=tmp_path / "vit.safetensors").module.eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(images), fixed(images), atol=1e-5)
        assert ours(torch.randn(2, 3, 64, 64)).shape == (2, fixed.num_features)
        with pytest.raises(AssertionError):
            fixed(torch.randn(2, 3, 64, 64))  # what a fixed-size model does with 64 px
