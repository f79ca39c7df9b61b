"""Backbones: pre-trained feature extractors with their preprocessing and layer map."""

from adaptlab.backbones.backbone import Backbone, Preprocessing
from adaptlab.backbones.layer_map import LayerMap

__all__ = ["Backbone", "LayerMap", "Preprocessing"]
