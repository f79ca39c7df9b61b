"""What an attribution is computed over, per modality: one continuous input tensor, the
score the model gives it, the baseline it is compared with, and the features a map shows.

Every method and check works through this one shape: ``score_module(x)`` returns
``[B, K]`` scores for a continuous ``x``. Token models are attributed on their word
embeddings (the Layer-IG recipe), so the same gradient methods serve text; series models on
their normalised context. What the model's output becomes as scores (class logits, a
predicted field's mean, a forecast's level), what the scores are called and what a sample's
label is come from the task (``Task.explain_*``), so a new task needs nothing here. Inputs
that are not attributed (an attention mask, a series'
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
from adaptlab.tasks.base import ScoreReduction, Task

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
    """``forward(x) -> [B, K]``: the model's scores for a continuous input ``x``.

    ``outputs`` (the modality's part) runs the model on ``x``; ``reduction`` (the task's
    part, :meth:`Task.explain_reduction`) turns what it returns into scores.
    """

    def __init__(self, model: nn.Module, extras: dict[str, torch.Tensor] | None = None,
                 reduction: ScoreReduction | None = None) -> None:
        super().__init__()
        self.model = model
        self.extras = extras or {}
        self.reduction = reduction

    def set_extras(self, extras: dict[str, torch.Tensor]) -> None:
        self.extras = extras

    def outputs(self, x: torch.Tensor) -> Any:
        """The model's output for ``x``, before the task's reduction."""
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.outputs(x)
        return out if self.reduction is None else self.reduction(out, x)


def task_class(task: str | Task | type[Task]) -> type[Task]:
    """The task class behind a task name, a task, or the class itself."""
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if isinstance(task, Task):
        return type(task)
    from adaptlab.tasks.registry import get_task_class

    return get_task_class(task)


class ExplainTarget:
    """Override points: ``score_module``, ``baseline``, ``to_features``, ``sample``."""

    modality = ""
    kind = "image"  # the renderer family: image, tokens, series
    batchable = True  # False when samples carry extras (explained one at a time)
    feature_axes = "pixels"  # what one feature is, for the report

    def __init__(self, model: nn.Module, backbone, task: str | Task | type[Task],
                 class_names: list[str]):
        self.model = model
        self.backbone = backbone
        self.task = task_class(task)
        self.task_name = self.task.name
        self.class_names = class_names

    @property
    def output_names(self) -> list[str]:
        return self.task.explain_output_names(self.model, self.class_names)

    def reduction(self, model: nn.Module) -> ScoreReduction | None:
        """The task's reduction of ``model``'s output to scores."""
        return self.task.explain_reduction(model, self.backbone)

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        return ScoreModule(model, reduction=self.reduction(model))

    def label(self, target: Any) -> int | None:
        """A sample's label from its dataset target (the task decides what that is)."""
        return self.task.explain_label(target)

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
        return Sample(index, image.unsqueeze(0), self.label(label), display={"image": shown})

    def background(self, sample: Sample, others: list[Sample]) -> torch.Tensor:
        pool = [other.inputs for other in others if other.index != sample.index][:15]
        return torch.cat([self.baseline(sample), *pool])

    def occlusion_window(self, sample: Sample):
        channels, height, _ = sample.inputs.shape[1:]
        side = max(height // 8, 2)
        return (channels, side, side), (channels, side // 2, side // 2)


@register_target("field")
class FieldTarget(ImageTarget):
    """Gridded fields: attributions per grid point (summed over the channels, the days of a
    window), the baseline a zero anomaly (climatology), the latest day drawn in a diverging
    colour map under the map."""

    modality = "field"
    feature_axes = "grid points (lat, lon)"
    valid: torch.Tensor | None = None  # [lat, lon], false at cells without data

    def _masks(self, features: torch.Tensor) -> bool:
        # A field rendered as an image (an image backbone) is not on the grid the mask is.
        return self.valid is not None and tuple(features.shape[-2:]) == tuple(self.valid.shape)

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        features = super().to_features(attributions)
        return features * self.valid.to(features.device) if self._masks(features) else features

    def eligible(self, sample: Sample) -> torch.Tensor:
        eligible = super().eligible(sample)
        return eligible & self.valid if self._masks(eligible) else eligible

    def sample(self, dataset, index: int) -> Sample:
        from matplotlib import colormaps

        field, label = dataset[index]
        latest = field[-1].numpy()
        limit = max(float(abs(latest).max()), 1e-6)
        shown = colormaps["RdBu_r"]((latest / limit + 1) / 2)[..., :3]
        return Sample(index, field.unsqueeze(0), self.label(label),
                      display={"image": shown, "coords": getattr(dataset, "coords", {})})


class EmbeddingScore(ScoreModule):
    """Scores from word embeddings: a forward hook puts ``x`` in place of the embedding
    layer's output, so position embeddings, masks and the rest of the model run as usual."""

    def __init__(self, model: nn.Module, embedding: nn.Module, extras=None,
                 reduction: ScoreReduction | None = None) -> None:
        super().__init__(model, extras, reduction)
        self._embedding = [embedding]  # a list keeps it out of this module's children
        self._replacement: torch.Tensor | None = None
        self._handle = embedding.register_forward_hook(self._replace)

    def remove(self) -> None:
        """Take the hook off the embedding layer (the model is left as it was found)."""
        self._handle.remove()

    def _replace(self, module, inputs, output):
        return self._replacement if self._replacement is not None else output

    def outputs(self, x: torch.Tensor) -> Any:
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

    def __init__(self, model, backbone, task, class_names):
        super().__init__(model, backbone, task, class_names)
        self._hooked: dict[int, EmbeddingScore] = {}

    def embedding(self, model: nn.Module | None = None) -> nn.Module:
        return input_embedding(model if model is not None else self.model)

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        if id(model) not in self._hooked:  # one hook per model, however often it is asked
            self._hooked[id(model)] = EmbeddingScore(model, self.embedding(model),
                                                     reduction=self.reduction(model))
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
        return Sample(index, inputs, self.label(label),
                      extras={"attention_mask": encoded["attention_mask"],
                              "input_ids": encoded["input_ids"]},
                      display={"tokens": tokens, "text": text})


class SeriesScore(ScoreModule):
    """Scores from a normalised context, the other series inputs (observed mask, season)
    travelling as extras."""

    def outputs(self, x: torch.Tensor) -> Any:
        batch = {key: _expand(value, x) for key, value in self.extras.items()}
        batch["context"] = x
        return self.model(batch)


@register_target("series-windows", "series-labelled")
class SeriesTarget(ExplainTarget):
    modality = "series"
    kind = "series"
    batchable = False
    feature_axes = "time steps"

    def score_module(self, model: nn.Module | None = None) -> ScoreModule:
        model = model if model is not None else self.model
        return SeriesScore(model, reduction=self.reduction(model))

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
                   "name": dataset.windows[index].describe(), **self.task.explain_display(target)}
        return Sample(index, inputs["context"].unsqueeze(0), self.label(target), extras=extras,
                      display=display)


@register_target("points", "point-segments")
class PointTarget(ExplainTarget):
    """Point clouds [B, N, 3]: one feature per point (attributions summed over x, y, z); the
    baseline a cloud collapsed onto its centre (no shape at all)."""

    modality = "points"
    kind = "points"
    feature_axes = "points"

    def to_features(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions.sum(dim=-1)

    def from_features(self, features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (features.unsqueeze(-1) / like.shape[-1]).expand_as(like).contiguous()

    def expand_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask[None, :, None]

    def sample(self, dataset, index: int) -> Sample:
        points, target = dataset[index]
        return Sample(index, points.unsqueeze(0), self.label(target),
                      display={"points": points.numpy(), "name": dataset.samples[index][0].name})

    def background(self, sample: Sample, others: list[Sample]) -> torch.Tensor:
        pool = [other.inputs for other in others if other.index != sample.index][:15]
        return torch.cat([self.baseline(sample), *pool])

    def occlusion_window(self, sample: Sample):
        # Occluding contiguous point indices hides a random subset, not a region; a window
        # of 1/16 of the points still measures how much small subsets matter.
        side = max(sample.inputs.shape[1] // 16, 1)
        return (side, 3), (side, 3)


def has_target(modality: str) -> bool:
    """Whether inputs of ``modality`` can be explained (and drawn by a report renderer)."""
    return modality in _TARGETS


def make_target(modality: str, model: nn.Module, backbone, task: str | Task | type[Task],
                class_names: list[str]) -> ExplainTarget:
    """The attribution target for ``modality``, explaining what ``task`` (a task name, a
    task or its class) makes of the model's output."""
    if modality not in _TARGETS:
        raise AdaptlabError(f"explain: no attribution target for modality {modality!r} "
                            f"(supported: {sorted(_TARGETS)})")
    return _TARGETS[modality](model, backbone, task, class_names)
