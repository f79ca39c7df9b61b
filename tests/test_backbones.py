"""Backbones load from local files the way online users' hub weights would, and refuse bad ones."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from adaptlab.backbones.offline import efficientnet_lite0
from adaptlab.backbones.timm_backbones import timm_backbone, timm_backbone_from_options
from adaptlab.errors import AdaptlabError


def test_timm_backbone_from_a_local_safetensors_file(tmp_path):
    source = timm_backbone("test_resnet", pretrained=False)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.module.state_dict().items()}, str(path))
    loaded = timm_backbone_from_options({"model_name": "test_resnet", "weights": str(path)})
    x = torch.randn(2, 3, 64, 64)
    source.module.eval()
    loaded.module.eval()
    assert torch.equal(source.module(x), loaded.module(x))
    assert loaded.source.startswith("local file")


def test_shape_mismatch_and_offline_hub_are_clear_errors(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"conv1.0.weight": torch.zeros(1, 1, 1, 1)}, str(path))
    with pytest.raises(AdaptlabError, match="conv1.0.weight has shape"):
        timm_backbone("test_resnet", weights=path)
    with pytest.raises(AdaptlabError, match="could not be fetched from the hub"):
        timm_backbone("test_resnet", pretrained=True)


def test_efficientnet_lite0_offline_weights_recognise_a_real_photo():
    """The offline package maps onto timm's model by position; with its ImageNet classifier
    kept, a real photo is classified as the right ImageNet class."""
    import timm
    from PIL import Image

    from adaptlab.backbones.offline import efficientnet_lite0_weights_path
    from adaptlab.backbones.timm_backbones import load_into
    from adaptlab.backbones.weights import load_state_dict_file
    from adaptlab.data.image_transforms import image_transforms
    from adaptlab_wildlife.datasets import DEMO_ROOT

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_into(model, load_state_dict_file(efficientnet_lite0_weights_path()), by_position=True,
              source="package")
    model.eval()
    transform = image_transforms(efficientnet_lite0().preprocessing, train=False)
    image = transform(Image.open(DEMO_ROOT / "photos" / "mammal" / "panda.jpg").convert("RGB"))
    with torch.no_grad():
        top = model(image[None]).softmax(1)[0].argmax().item()
    assert top == 388  # ImageNet class 388: giant panda


@pytest.mark.gpu
def test_demo_trains_on_cuda_with_mixed_precision(tmp_path):
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    result = run(RunConfig(domain="wildlife", out=str(tmp_path / "gpu"), device="cuda",
                           epochs=2), progress=False)
    assert result.costs["device"].startswith("cuda")
    assert result.costs["memory_bytes"]["peak_cuda"] > 0
    assert result.metrics["final"]["test"]["accuracy"] > result.metrics["baseline"]["test"]["accuracy"]
