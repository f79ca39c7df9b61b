"""What an attribution is computed over, per modality: one continuous input tensor, the
score the model gives it, the baseline it is compared with, and the features a map shows.

Every method and check works through this one shape: ``score_module(x)`` returns
``[B, K]`` scores for a continuous ``x``. Token models are attributed on their word
embeddings (the Layer-IG recipe), so the same gradient methods serve text; series models on
their normalised context. Inputs that are not attributed (an attention mask, a series'
observed mask) travel as ``extras`` of one sample and are broadcast to any batch the methods
build, which is why such targets are explained one sample at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adaptlab.errors import AdaptlabError

_TARGETS: dict[str, Callable[..., ExplainTarget]] = {}


def register_target(*modalities: str):
    def decorate(builder: Callable) -> Callable:
        for modality in modalities:
            _TARGETS[modality] = builder
        return builder

    return decorate


@dataclass
class Sample:
    """One explained item: its input (continuous, batch of 1), extras, label and display data."""

    index: int
    inputs: torch.Tensor
    label: int | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    display: dict[str, Any] = field(default_factory=dict)  # what a renderer draws under the map


def _expand(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One sample's extra input on ``like``'s device, broadcast to its batch."""
    value = value.to(like.device)
    return value.expand(like.shape[0], *value.shape[1:]) if value.shape[0] == 1 else value


class ScoreModule(nn.Module):
    """``forward(x) -> [B, K]``: the model's scores for a continuous input ``x``."""

    def __init__(self, model: nn.Module, extras: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.extras = extras or {}

    def set_extras(self, extras: dict[str, torch.Tensor]) -> None:
        self.extras = extras

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ExplainTarget:
    """Override points: ``score_module``, ``baseline``, ``to_features``, ``sample``."""

    modality = ""
    kind = "image"  # the renderer family: image, tokens, series
    batchable = True  # False when samples carry extras (explained one at a time)
    feature_axes = "pixels"  # what one feature is, for the report

    def __init__(self, model: nn.Module, backbone, task_name: str, class_names: list[str]):
        self.model = model
        self.backbone = backbone
        self.task_name = task_name
        self.class_names = class_names

    @property
    def output_names(self) -> list[str]:
        return self.class_names

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        return ScoreModule(model if model is not None else self.model)

    def baseline(self, sample: Sample) -> torch.Tensor:
        return torch.zeros_like(sample.inputs)

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        """``[B, *input]`` -> ``[B, *features]`` (a pixel map, a token row, a step row)."""
        raise NotImplementedError

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Spread a feature map back over the input (for checks on feature-space methods)."""
        raise NotImplementedError

    def eligible(self, sample: Sample) -> torch.Tensor:
        """Which features count (real tokens, observed steps), as a bool feature map."""
        return torch.ones(self.to_features(sample.inputs)[0].shape, dtype=torch.bool)

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A bool feature map -> a mask that broadcasts over one input (batch of 1)."""
        raise NotImplementedError

    def sample(self, dataset, index: int) -> Sample:
        raise NotImplementedError

    def background(self, sample: Sample, others: list[Sample]) -> torch.Tensor:
        """SHAP's reference inputs: the other explained samples where inputs are comparable
        (images), else the sample's own baseline."""
        return self.baseline(sample)

    def occlusion_window(self, sample: Sample) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window shape, strides) for Occlusion over one input of this kind."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove anything attached to models while explaining."""


@register_target("image", "array-image")
class ImageTarget(ExplainTarget):
    modality = "image"
    kind = "image"

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.sum(dim=1)

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (features.unsqueeze(1) / like.shape[1]).expand_as(like).contiguous()

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask[None, None]

    def sample(self, dataset, index: int) -> Sample:
        image, label = dataset[index]
        pre = self.backbone.preprocessing
        mean = torch.tensor(pre.mean).view(-1, 1, 1)
        std = torch.tensor(pre.std).view(-1, 1, 1)
        shown = (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        return Sample(index, image.unsqueeze(0), int(label), display={"image": shown})

    def background(self, sample: Sample, others: list[Sample]) -> torch.Tensor:
        pool = [other.inputs for other in others if other.index != sample.index][:15]
        return torch.cat([self.baseline(sample), *pool])

    def occlusion_window(self, sample: Sample):
        channels, height, _ = sample.inputs.shape[1:]
        side = max(height // 8, 2)
        return (channels, side, side), (channels, side // 2, side // 2)


def _residual_channel(model: nn.Module) -> int | None:
    try:
        return model.residual_channel
    except AttributeError:
        return None


class FieldMeanScore(ScoreModule):
    """A predicted field's mean (per output channel): what drives the map the model predicts
    up or down as a whole. A model predicting the change from an input field is scored on
    the change: the pass-through of that field is the same for any weights and would
    otherwise dominate every map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        channel = _residual_channel(self.model)
        if channel is not None and out.ndim == 4:
            channel %= x.shape[1]
            out = out - x[:, channel:channel + 1]
        return out.flatten(2).mean(dim=2) if out.ndim == 4 else out


@register_target("field")
class FieldTarget(ImageTarget):
    """Gridded fields: attributions per grid point (summed over the channels, the days of a
    window), the baseline a zero anomaly (climatology), the latest day drawn in a diverging
    colour map under the map. For field regression the explained score is the predicted
    field's mean."""

    modality = "field"
    feature_axes = "grid points (lat, lon)"

    @property
    def output_names(self) -> list[str]:
        if self.task_name == "field-regression":
            what = "change of " if _residual_channel(self.model) is not None else ""
            return [f"mean predicted {what}{name}" for name in self.class_names]
        return self.class_names

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        return FieldMeanScore(model) if self.task_name == "field-regression" \
            else ScoreModule(model)

    def sample(self, dataset, index: int) -> Sample:
        from matplotlib import colormaps

        field, label = dataset[index]
        latest = field[-1].numpy()
        limit = max(float(abs(latest).max()), 1e-6)
        shown = colormaps["RdBu_r"]((latest / limit + 1) / 2)[..., :3]
        label = int(label) if not torch.is_tensor(label) or label.ndim == 0 else None
        return Sample(index, field.unsqueeze(0), label,
                      display={"image": shown, "coords": getattr(dataset, "coords", {})})


class EmbeddingScore(ScoreModule):
    """Scores from word embeddings: a forward hook puts ``x`` in place of the embedding
    layer's output, so position embeddings, masks and the rest of the model run as usual."""

    def __init__(self, model: nn.Module, embedding: nn.Module, extras=None) -> None:
        super().__init__(model, extras)
        self._embedding = [embedding]  # a list keeps it out of this module's children
        self._replacement: torch.Tensor | None = None
        self._handle = embedding.register_forward_hook(self._replace)

    def remove(self) -> None:
        """Take the hook off the embedding layer (the model is left as it was found)."""
        self._handle.remove()

    def _replace(self, module, inputs, output):
        return self._replacement if self._replacement is not None else output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = _expand(self.extras["attention_mask"], x)
        ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        self._replacement = x
        try:
            return self.model({"input_ids": ids, "attention_mask": mask})
        finally:
            self._replacement = None


def input_embedding(model: nn.Module) -> nn.Module:
    """The word-embedding layer of the Hugging Face encoder inside ``model``."""
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if getter is not None and hasattr(module, "config"):
            embedding = getter()
            if isinstance(embedding, nn.Embedding):
                return embedding
    raise AdaptlabError("explain: no word-embedding layer found in the token model")


@register_target("text")
class TokenTarget(ExplainTarget):
    modality = "text"
    kind = "tokens"
    batchable = False
    feature_axes = "tokens"

    def __init__(self, model, backbone, task_name, class_names):
        super().__init__(model, backbone, task_name, class_names)
        self._hooked: dict[int, EmbeddingScore] = {}

    def embedding(self, model: nn.Module | None = None) -> nn.Module:
        return input_embedding(model if model is not None else self.model)

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        if id(model) not in self._hooked:  # one hook per model, however often it is asked
            self._hooked[id(model)] = EmbeddingScore(model, self.embedding(model))
        return self._hooked[id(model)]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.backbone.tokenizer(texts, padding=True, truncation=True,
                                          max_length=self.backbone.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def baseline_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Every ordinary token replaced by padding; the special tokens stay."""
        tokenizer = self.backbone.tokenizer
        special = torch.tensor(tokenizer.get_special_tokens_mask(ids[0].tolist(),
                                                                 already_has_special_tokens=True))
        return torch.where(special.bool().unsqueeze(0).to(ids.device), ids,
                           torch.full_like(ids, tokenizer.pad_token_id or 0))

    @torch.no_grad()
    def baseline(self, sample: Sample) -> torch.Tensor:
        embedding = self.embedding()
        ids = self.baseline_ids(sample.extras["input_ids"]).to(embedding.weight.device)
        return embedding(ids).to(sample.inputs.device)

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.sum(dim=-1)

    def occlusion_window(self, sample: Sample):
        width = sample.inputs.shape[-1]
        return (1, width), (1, width)

    def close(self) -> None:
        for score in self._hooked.values():
            score.remove()
        self._hooked.clear()

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (features.unsqueeze(-1) / like.shape[-1]).expand_as(like).contiguous()

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask[None, :, None]

    def eligible(self, sample: Sample) -> torch.Tensor:
        ids = sample.extras["input_ids"][0].tolist()
        special = self.backbone.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        return ~torch.tensor(special, dtype=torch.bool)

    @torch.no_grad()
    def sample(self, dataset, index: int) -> Sample:
        text, label = dataset[index]
        encoded = self.tokenize([text])
        embedding = self.embedding()
        inputs = embedding(encoded["input_ids"].to(embedding.weight.device)).cpu()
        tokens = self.backbone.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
        return Sample(index, inputs, int(label),
                      extras={"attention_mask": encoded["attention_mask"],
                              "input_ids": encoded["input_ids"]},
                      display={"tokens": tokens, "text": text})


class SeriesScore(ScoreModule):
    """Scores from a normalised context: class logits, or the forecast's median level (the
    mean of the median quantile over the horizon) for a forecaster."""

    def __init__(self, model: nn.Module, median_index: int | None, extras=None) -> None:
        super().__init__(model, extras)
        self.median_index = median_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = {key: _expand(value, x) for key, value in self.extras.items()}
        batch["context"] = x
        out = self.model(batch)
        if self.median_index is None:
            return out
        return out[..., self.median_index].mean(dim=1, keepdim=True)


@register_target("series-windows", "series-labelled")
class SeriesTarget(ExplainTarget):
    modality = "series"
    kind = "series"
    batchable = False
    feature_axes = "time steps"

    @property
    def output_names(self) -> list[str]:
        return self.class_names if self.task_name == "classification" else ["forecast level"]

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        median = None
        if self.task_name == "forecasting":
            levels = list(self.backbone.series.quantiles)
            median = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
        return SeriesScore(model if model is not None else self.model, median)

    def baseline(self, sample: Sample) -> torch.Tensor:
        """A flat line at the observed context's mean: "no pattern" in the window."""
        observed = sample.extras["observed"]
        level = sample.inputs[observed].mean() if observed.any() else sample.inputs.new_tensor(0.0)
        return torch.where(observed, level, sample.inputs)

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions

    def occlusion_window(self, sample: Sample):
        observed = int(sample.extras["observed"].sum())
        side = max(observed // 24, 1)
        return (side,), (side,)

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return features

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask[None]

    def eligible(self, sample: Sample) -> torch.Tensor:
        return sample.extras["observed"][0].bool()

    def sample(self, dataset, index: int) -> Sample:
        inputs, target = dataset[index]
        extras = {key: value.unsqueeze(0) for key, value in inputs.items() if key != "context"}
        observed = inputs["observed"].numpy()
        display = {"context": inputs["context"].numpy()[observed], "observed": observed,
                   "name": dataset.windows[index].describe()}
        label = int(target) if self.task_name == "classification" else None
        if self.task_name == "forecasting":
            display["future"] = target.numpy()
        return Sample(index, inputs["context"].unsqueeze(0), label, extras=extras, display=display)


class MeanPointScore(ScoreModule):
    """Segmentation scores for a whole cloud: each part class's logit averaged over the
    points, so a map shows which points drive the model to call points of that class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).mean(dim=1)


@register_target("points", "point-segments")
class PointTarget(ExplainTarget):
    """Point clouds [B, N, 3]: one feature per point (attributions summed over x, y, z); the
    baseline a cloud collapsed onto its centre (no shape at all)."""

    modality = "points"
    kind = "points"
    feature_axes = "points"

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        return MeanPointScore(model) if self.task_name == "segmentation" else ScoreModule(model)

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.sum(dim=-1)

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (features.unsqueeze(-1) / like.shape[-1]).expand_as(like).contiguous()

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask[None, :, None]

    def sample(self, dataset, index: int) -> Sample:
        points, target = dataset[index]
        label = int(torch.mode(target).values) if torch.is_tensor(target) else int(target)
        return Sample(index, points.unsqueeze(0), label,
                      display={"points": points.numpy(), "name": dataset.samples[index][0].name})

    def background(self, sample: Sample, others: list[Sample]) -> torch.Tensor:
        pool = [other.inputs for other in others if other.index != sample.index][:15]
        return torch.cat([self.baseline(sample), *pool])

    def occlusion_window(self, sample: Sample):
        # Occluding contiguous point indices hides a random subset, not a region; a window
        # of 1/16 of the points still measures how much small subsets matter.
        side = max(sample.inputs.shape[1] // 16, 1)
        return (side, 3), (side, 3)


def make_target(modality: str, model: nn.Module, backbone, task_name: str,
                class_names: list[str]) -> ExplainTarget:
    if modality not in _TARGETS:
        raise AdaptlabError(f"explain: no attribution target for modality {modality!r} "
                            f"(supported: {sorted(_TARGETS)})")
    return _TARGETS[modality](model, backbone, task_name, class_names)
