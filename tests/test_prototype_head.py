"""A new linear head started at the class prototypes: on planted clusters its step-0
predictions are the cosine nearest-class-mean classifier's (computed here with NumPy), under
a peft wrapper the trainable copy of the head is the one set, an MLP head keeps its random
start, and a finished run records what was done."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import ClassificationModel, build_model
from adaptlab.tasks.prototype_head import init_head_from_prototypes

CLASSES, WIDTH = 4, 16


def planted(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four Gaussian clusters of features with lengths that vary (as pre-trained features'
    do), so the head must not mistake length for class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, WIDTH, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(CLASSES).repeat_interleave(n_per_class)
    features = centres[labels] + 0.5 * torch.randn(len(labels), WIDTH, generator=generator)
    lengths = 0.2 + 5 * torch.rand(len(labels), 1, generator=generator)
    return features * lengths, labels


def batches(features, labels, size=10):
    return [(features[i:i + size], labels[i:i + size]) for i in range(0, len(labels), size)]


def cosine_ncm(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray,
               classes: int = CLASSES) -> np.ndarray:
    """Nearest class mean by cosine, the class means taken over unit-length features."""
    unit = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    means = np.stack([unit[train_y == c].mean(0) for c in range(classes)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return ((x / np.linalg.norm(x, axis=1, keepdims=True)) @ means.T).argmax(1)


def test_step_zero_is_the_cosine_prototype_classifier():
    train_x, train_y = planted(12, seed=0)
    test_x, test_y = planted(25, seed=1)
    torch.manual_seed(0)
    model = ClassificationModel(nn.Identity(), nn.Linear(WIDTH, CLASSES))
    with torch.no_grad():
        before = (model(test_x).argmax(1) == test_y).float().mean().item()
    scale = init_head_from_prototypes(model, "task_head", batches(train_x, train_y), "cpu",
                                      CLASSES)
    assert scale is not None
    with torch.no_grad():
        logits = model(test_x)
    expected = cosine_ncm(train_x.numpy(), train_y.numpy(), test_x.numpy())
    assert np.array_equal(logits.argmax(1).numpy(), expected)
    assert (expected == test_y.numpy()).mean() > 0.95 and before < 0.6
    # Calibrated: the start's cross-entropy is well under a uniform guess's.
    assert nn.functional.cross_entropy(logits, test_y).item() < 0.5 * np.log(CLASSES)


def test_under_lora_the_trainable_head_copy_is_set():
    from adaptlab.backbones.timm_backbones import timm_backbone

    torch.manual_seed(0)
    backbone = timm_backbone("test_vit", pretrained=False)
    strategy = get_strategy_class("lora").from_options({})
    model, layer_map = build_model(backbone, 2, strategy.config)
    original = model.task_head.weight.detach().clone()
    model = strategy.setup(model, layer_map)
    images = torch.randn(8, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1] * 4)
    init_head_from_prototypes(model, layer_map.head, [(images, labels)], "cpu", 2)
    heads = {name: module for name, module in model.named_modules()
             if name.endswith("task_head.modules_to_save.default")
             or name.endswith("task_head.original_module")}
    assert len(heads) == 2
    for name, module in heads.items():
        changed = not torch.equal(module.weight, original)
        assert changed == name.endswith("modules_to_save.default"), name
    # LoRA starts as the identity, so the head read the pre-trained pooled features: its
    # predictions are the cosine prototype classifier's on them.
    model.eval()
    with torch.no_grad():
        pooled = backbone.module(images).numpy()
        predicted = model(images).argmax(1).numpy()
    assert np.array_equal(predicted, cosine_ncm(pooled, labels.numpy(), pooled, 2))


def test_mlp_head_keeps_its_random_start():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(WIDTH, 8), nn.GELU(), nn.Linear(8, CLASSES))
    model = ClassificationModel(nn.Identity(), head)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_x, train_y = planted(5, seed=0)
    assert init_head_from_prototypes(model, "task_head", batches(train_x, train_y), "cpu",
                                      CLASSES) is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_run_asked_to_starts_its_head_from_prototypes(tmp_path):
    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from conftest import write_colour_folder

    data = write_colour_folder(tmp_path / "data", per_class=6)
    started = {}
    for init in ("prototypes", "random"):
        config = RunConfig(domain="wildlife", data=str(data), strategy="head", epochs=1,
                           image_size=32, batch_size=8, device="cpu", lr=1e-3,
                           strategy_options={"head_init": init}, out=str(tmp_path / init))
        run_dir = run(config, progress=False).run_dir
        events = [json.loads(line) for line in
                  (run_dir / "events.jsonl").read_text().splitlines()]
        started[init] = [e for e in events if e["event"] == "head_init"]
    assert len(started["prototypes"]) == 1 and started["prototypes"][0]["method"] == "prototypes"
    assert started["random"] == []


@pytest.mark.parametrize("value", ["zeros", 3])
def test_unknown_head_init_is_refused_by_name(value):
    from adaptlab.errors import AdaptlabError

    with pytest.raises(AdaptlabError, match="head_init"):
        get_strategy_class("head").from_options({"head_init": value})
