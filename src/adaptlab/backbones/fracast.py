"""Fracast-0 (the ``fracast`` package) as a trainable forecasting backbone.

The package's ``forecast()`` runs under ``torch.inference_mode`` and normalises inside, so it
cannot be fine-tuned; here its two modules are called directly on tensors that
:class:`adaptlab.data.series.SeriesWindowDataset` has already normalised the package's way
(min-max over the context), and the output stays in that normalised space for the loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from adaptlab.backbones.backbone import Backbone, SeriesPreprocessing
from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError


class FracastEncoder(nn.Module):
    """The Fracast core: normalised context ``[B, W]`` plus mask -> hidden states ``[B, W, D]``."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward_features(self, context: torch.Tensor, observed: torch.Tensor,
                         **_: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, W, D]``, one per context step."""
        mask = observed.unsqueeze(1)
        return self.core(context.unsqueeze(1), mask, mask.to(context.dtype))

    def pooled(self, hidden: torch.Tensor, context: torch.Tensor, observed: torch.Tensor,
               **_: torch.Tensor) -> torch.Tensor:
        """What the forecaster hands its head: the per-step states themselves (a side
        network that corrects them pools them the same way: ``strategies.lst.series``)."""
        return hidden

    def forward(self, context: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.forward_features(context, observed), context, observed)


class PooledFracastEncoder(FracastEncoder):
    """Series features for classification: the mean of the hidden states over the observed
    steps, joined with the last step's state (the summary Fracast's own head starts from)."""

    def pooled(self, hidden: torch.Tensor, context: torch.Tensor, observed: torch.Tensor,
               **_: torch.Tensor) -> torch.Tensor:
        weights = observed.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return torch.cat([mean, hidden[:, -1]], dim=-1)

    def forward(self, context: torch.Tensor, observed: torch.Tensor, **_: torch.Tensor
                ) -> torch.Tensor:
        return self.pooled(self.forward_features(context, observed), context, observed)


class FracastHead(nn.Module):
    """The pre-trained quantile head: hidden states -> ``[B, native horizon, quantiles]``."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, observed: torch.Tensor
                ) -> torch.Tensor:
        return self.head.forward_horizon(hidden, last_obs=context[:, -1:], ctx=context,
                                         ctx_mask=observed)


def _load(options: dict | None):
    try:
        from fracast.inference import _resolve_model_dir, load_fracast
    except ImportError as exc:
        raise AdaptlabError("backbone fracast needs the package 'fracast'") from exc
    source = (options or {}).get("weights")
    try:
        folder = _resolve_model_dir(source)
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        core, head = load_fracast(folder, weights="fp32")
    except (OSError, ValueError, RuntimeError) as exc:
        raise AdaptlabError(f"backbone fracast: cannot load weights from {source or 'the package'} "
                            f"({exc})") from exc
    return core, head, config["model"], str(source or "fracast package")


def _backbone(module: nn.Module, model: dict, source: str, num_features: int, head=None
              ) -> Backbone:
    layer_map = _layer_map(module.core)
    return Backbone(name="fracast-0", module=module, num_features=num_features,
                    layer_map=layer_map, source=source,
                    series=SeriesPreprocessing(context_length=int(model["W"]),
                                               horizon=int(model["horizon"]),
                                               quantiles=tuple(model["quantiles"]),
                                               scaling="minmax"),
                    pretrained_head=head, feature_layout="series",
                    feature_dim=int(model["d_model"]))


def _layer_map(core: nn.Module) -> LayerMap:
    """The stem is the input projection and the periodic features' projection. The dilated
    conv stack shares one block (and its scale conditioning) across its scale ladder
    (``share_stages``): one block, whose output is its last application's; unshared, each
    stage is a block and the shared scale conditioning goes with the first. The final norm
    is the neck."""
    present = {name for name, _ in core.named_children()}
    if getattr(core, "block", None) is not None:
        blocks = [["scale", "block"]]
    else:
        blocks = [[f"blocks.{i}"] for i in range(len(core.blocks))]
        blocks[0].insert(0, "scale")
    stem = [n for n in ("in_proj", "periodic") if n in present]
    blocks = [[n for n in block if n in present] for block in blocks]
    return LayerMap(embeddings=stem, blocks=blocks, neck=["norm"], norms=["norm"]
                    ).prefixed("core")


def fracast(options: dict | None = None) -> Backbone:
    """Fracast-0 as a forecaster: ``options`` may name ``weights`` (a release folder holding
    config.json and model.safetensors, or a hub id when online); the package's bundled
    weights otherwise."""
    core, head, model, source = _load(options)
    return _backbone(FracastEncoder(core), model, source, int(model["d_model"]),
                     FracastHead(head))


def fracast_features(options: dict | None = None) -> Backbone:
    """Fracast-0's encoder as a feature extractor (series classification)."""
    core, _, model, source = _load(options)
    return _backbone(PooledFracastEncoder(core), model, source, 2 * int(model["d_model"]))
