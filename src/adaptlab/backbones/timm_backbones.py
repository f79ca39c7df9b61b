"""Build timm backbones: hub weights when online, a local weights file, or an offline package."""

from __future__ import annotations

from pathlib import Path

import torch

from adaptlab.backbones.backbone import Backbone, Preprocessing
from adaptlab.backbones.layer_map import layer_map_from_timm
from adaptlab.backbones.weights import load_state_dict_file
from adaptlab.errors import AdaptlabError


def _preprocessing(model) -> Preprocessing:
    cfg = model.pretrained_cfg
    return Preprocessing(input_size=tuple(cfg.get("input_size", (3, 224, 224))),
                         mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                         std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                         interpolation=cfg.get("interpolation", "bicubic"),
                         crop_pct=float(cfg.get("crop_pct", 0.875)))


def _feature_layout(model) -> str:
    """How timm lays out ``forward_features``: token models declare their prefix tokens,
    channels-last models their ``output_fmt``."""
    if getattr(model, "num_prefix_tokens", None) is not None:
        return "tokens"
    return "map-nhwc" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "map"


def timm_backbone(model_name: str, weights: str | Path | None = None,
                  pretrained: bool = True, by_position: bool = False,
                  in_chans: int = 3) -> Backbone:
    """A timm model without its classifier (``num_classes=0`` gives pooled features).

    ``weights``: a local file, loaded instead of the hub; ``by_position`` maps a state dict whose
    names differ from timm's but whose tensors come in the same order with the same shapes.
    ``pretrained`` without ``weights`` uses timm's own pretrained mechanism (needs the hub).
    """
    import timm

    try:
        model = _create(timm, model_name, pretrained=False, in_chans=in_chans)
    except RuntimeError as exc:
        raise AdaptlabError(f"unknown timm backbone {model_name!r} ({exc})") from exc
    if weights is not None:
        state = load_state_dict_file(Path(weights))
        load_into(model, state, by_position=by_position, source=str(weights))
        source = f"local file {weights}"
    elif pretrained:
        try:
            model = _create(timm, model_name, pretrained=True, in_chans=in_chans)
        except Exception as exc:  # hub errors come in many types (offline, auth, 404)
            raise AdaptlabError(
                f"backbone {model_name!r}: pretrained weights could not be fetched from the hub "
                f"({type(exc).__name__}); pass a local file with --set backbone_weights=PATH"
            ) from exc
        source = f"timm hub {model.pretrained_cfg.get('hf_hub_id', model_name)}"
    else:
        source = "random init"
    return Backbone(name=model_name, module=model, num_features=model.num_features,
                    layer_map=layer_map_from_timm(model), preprocessing=_preprocessing(model),
                    source=source, feature_layout=_feature_layout(model))


def _create(timm, model_name: str, pretrained: bool, in_chans: int):
    """The model without its classifier; a vision transformer takes any image size (its
    position embeddings resampled per input), so ``image_size`` works for it as for a CNN."""
    options = {"pretrained": pretrained, "num_classes": 0, "in_chans": in_chans}
    try:
        return timm.create_model(model_name, dynamic_img_size=True, **options)
    except TypeError:  # a convolutional model: any size already, and no such argument
        return timm.create_model(model_name, **options)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], by_position: bool,
              source: str) -> None:
    """Load ``state`` into ``model``, ignoring classifier tensors the model no longer has."""
    own = model.state_dict()
    if by_position:
        # Offline checkpoints (e.g. the EfficientNet-Lite0 package) use another naming scheme
        # but the same tensor order; map by position and insist every shape agrees.
        own_keys = [k for k in own if not k.endswith("num_batches_tracked")]
        theirs = [k for k in state if not k.endswith("num_batches_tracked")]
        theirs = theirs[: len(own_keys)]
        if len(theirs) != len(own_keys):
            raise AdaptlabError(f"{source}: {len(theirs)} tensors, the model needs {len(own_keys)}")
        mapped = {}
        for mine, other in zip(own_keys, theirs, strict=True):
            if tuple(own[mine].shape) != tuple(state[other].shape):
                raise AdaptlabError(f"{source}: tensor {other} has shape "
                                    f"{tuple(state[other].shape)}, model's {mine} has "
                                    f"{tuple(own[mine].shape)}")
            mapped[mine] = state[other]
        state = mapped
    else:
        state = {k: v for k, v in state.items() if k in own}
        bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise AdaptlabError(f"{source}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}"
                                f", the model expects {tuple(own[bad[0]].shape)}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise AdaptlabError(f"{source}: weights lack {len(missing)} tensors, e.g. {missing[0]}")
    model.load_state_dict(state, strict=False)


def timm_backbone_from_options(options: dict) -> Backbone:
    """Builder for plugin specs: ``options`` holds ``model_name`` and optionally ``weights``."""
    backbone = timm_backbone(options["model_name"], weights=options.get("weights"),
                             pretrained=options.get("pretrained", True))
    return backbone
