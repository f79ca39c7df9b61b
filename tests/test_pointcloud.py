"""The point-cloud plugin: generated shapes, the CGAL demo, point backbones, segmentation
and the generated-shapes -> real-meshes transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptlab.cli import main
from adaptlab_pointcloud import datasets, shapes  # part of the install: broken fails, never skips


def test_generated_shapes_are_deterministic_for_a_seed_and_cover_every_part():
    for label in range(len(shapes.CLASSES)):
        a = shapes.generate(label, np.random.default_rng(4))
        b = shapes.generate(label, np.random.default_rng(4))
        c = shapes.generate(label, np.random.default_rng(5))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(a[0], c[0])
        assert np.linalg.norm(a[0], axis=1).max() == pytest.approx(1.0)
    parts = np.concatenate([shapes.generate(0, np.random.default_rng(i))[2] for i in range(6)])
    assert set(np.unique(parts)) == {0, 1, 2, 3}  # body, limb, head, tail on animals


def test_the_cgal_demo_keeps_every_scan_of_a_mesh_in_one_split():
    data = datasets.cgal_meshes({})
    assert data.class_names == ["animal", "human body", "manufactured object"]
    meshes = {split: {cloud.name.split(" scan")[0] for cloud, _ in items}
              for split, items in data.samples.items()}
    assert sum(len(names) for names in meshes.values()) == 37
    assert not (meshes["train"] & meshes["test"] or meshes["train"] & meshes["val"]
                or meshes["val"] & meshes["test"])
    for split in ("train", "val", "test"):
        assert set(data.labels(split)) == {0, 1, 2}
    # Scans of one mesh differ (view, occlusion, noise), and all have enough points.
    first = [c.points for c, _ in data.samples["train"][:2]]
    assert first[0].shape != first[1].shape or not np.allclose(first[0], first[1])
    assert min(len(c.points) for items in data.samples.values() for c, _ in items) >= 256


@pytest.mark.parametrize("name", ["dgcnn", "point_transformer"])
def test_point_backbones_map_their_layers_and_give_point_features(name, tmp_path):
    from safetensors.torch import save_file

    from adaptlab.backbones import point_nets

    backbone = getattr(point_nets, name)({"num_points": 128, "k": 8})
    # Weights from a file (a path string, as --set backbone_weights passes it) replace the
    # seeded initialisation.
    save_file(backbone.module.state_dict(), tmp_path / "w.safetensors")
    other = getattr(point_nets, name)({"num_points": 128, "k": 8, "init_seed": 1,
                                       "weights": str(tmp_path / "w.safetensors")})
    for key, value in backbone.module.state_dict().items():
        torch.testing.assert_close(other.module.state_dict()[key], value)
    modules = dict(backbone.module.named_modules())
    for entry in backbone.layer_map.embeddings + [n for b in backbone.layer_map.blocks
                                                  for n in b]:
        assert entry in modules, entry
    points = torch.randn(2, 128, 3)
    assert backbone.module(points).shape == (2, backbone.num_features)
    assert backbone.module.forward_features(points).shape == \
        (2, 128, backbone.module.num_point_features)
    # Per-point features follow their point: permuting the input permutes them.
    order = torch.randperm(128)
    backbone.module.eval()
    with torch.no_grad():
        moved = backbone.module.forward_features(points[:, order])
        torch.testing.assert_close(moved, backbone.module.forward_features(points)[:, order],
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_lora_on_the_point_transformer_trains_only_adapters_and_head(tmp_path, capsys):
    out = tmp_path / "lora"
    assert main(["run", "pointcloud", "--backbone", "point_transformer", "--strategy", "lora",
                 "--set", "epochs=1", "--set", "train_samples=16", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    costs = json.loads((out / "costs.json").read_text())
    assert 0 < costs["trainable_params"] < 0.2 * costs["total_params"]


@pytest.mark.slow
def test_part_segmentation_learns_parts_of_generated_shapes(tmp_path, capsys):
    out = tmp_path / "parts"
    assert main(["run", "pointcloud", "--dataset", "generated-parts", "--set", "epochs=4",
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test, baseline = metrics["final"]["test"], metrics["baseline"]["test"]
    assert metrics["monitor"] == "miou"
    assert set(test["per_class_iou"]) == {"body", "limb", "head", "tail"}
    assert test["miou"] > baseline["miou"] + 0.05
    assert test["point_accuracy"] > 0.55  # "body" everywhere would score about 0.5


@pytest.mark.slow
def test_transfer_from_generated_shapes_beats_the_target_alone_at_the_smallest_fraction(
        tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["transfer", "pointcloud", "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--fractions", "0.05", "--seeds", "0,1,2", "--source-set", "epochs=5",
                 "--set", "epochs=15",  # the demo's are 8 and 20
                 "--device", "cpu", "--quiet"]) == 0
    result = json.loads((out / "learning_curve.json").read_text())
    row = result["summary"][0]
    assert row["transfer"]["seeds"] == row["control"]["seeds"] == 3
    assert row["transfer"]["mean"] > row["control"]["mean"]


def test_point_pooling_keeps_the_winners_indices_for_backward_not_its_input():
    """The point networks pool neighbours and patches with a max whose backward keeps one
    int64 index per output, not the pooled input (``amax`` would keep all 16 float32 entries
    per output here: 8 times the bytes); the gradient reaches exactly the winning entries."""
    from torch import nn

    from adaptlab.backbones.point_nets import max_pool
    from adaptlab.costs.meter import SavedActivationCounter

    x = torch.randn(2, 8, 16, 32, requires_grad=True)
    with SavedActivationCounter(nn.Module()) as counter:
        pooled = max_pool(x, 2)
    assert pooled.shape == (2, 8, 32)
    assert counter.bytes == 2 * 8 * 32 * 8  # one int64 index per output
    assert torch.equal(pooled, x.detach().amax(dim=2))
    pooled.backward(torch.ones_like(pooled))
    winners = x.detach() == x.detach().amax(dim=2, keepdim=True)
    assert torch.equal(x.grad, winners.float())
