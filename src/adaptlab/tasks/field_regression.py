"""Regression from gridded fields: a field (next year's temperature map) or a vector of
scalars (a regional mean) from the input fields.

On a latitude-longitude grid a cell's area goes with cos(latitude), so the loss and the
metrics weight every grid point by it, normalised to mean 1 (WeatherBench's convention): an
error at 60N counts half one at the equator. Metrics: area-weighted RMSE (in the target's
units), area-weighted MAE, and the anomaly correlation coefficient (ACC): per sample, the
area-weighted correlation between predicted and true anomaly maps, each centred on its own
area-weighted mean, so ACC measures the pattern and RMSE the amplitude. Baselines need no
training: persistence (the input field the loader names as the same quantity as the
target) and climatology (the training targets' mean).

A loader whose grid has cells without data (a fixed mask) names the others in
``task_options["valid_cells"]`` ([lat][lon], true where the target is defined): their weight is
zero in the loss, the metrics and the baselines, so a value filled in there never counts.

When the loader names such an input channel (``residual_channel``), the model predicts the
change from it (output = that field + head), as weather networks predict tendencies: the
change is small and stationary where the field itself drifts out of the training range (a
warming climate), and an untrained head starts at persistence instead of at zero.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from adaptlab.backbones.backbone import Backbone
from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import ScoreReduction, Task, TaskOptions
from adaptlab.tasks.registry import register_task


def latitude_weights(coords: dict[str, list[float]], rows: int) -> torch.Tensor:
    """[rows, 1] weights cos(lat) / mean(cos(lat)); ones when the grid has no latitudes."""
    lat = coords.get("lat")
    if not lat:
        return torch.ones(rows, 1)
    if len(lat) != rows:
        raise AdaptlabError(f"the grid names {len(lat)} latitudes, the fields have {rows} rows")
    weights = torch.cos(torch.deg2rad(torch.tensor(lat, dtype=torch.float32))).clamp(min=0)
    return (weights / weights.mean()).unsqueeze(1)


class FieldRegressionModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, field_output: bool,
                 residual_channel: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_head = head
        self.field_output = field_output
        self.residual_channel = residual_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.field_output:
            return self.task_head(self.backbone(x))
        out = self.task_head(self.backbone.forward_features(x))
        if self.residual_channel is not None:
            channel = self.residual_channel % x.shape[1]
            out = out + x[:, channel:channel + 1]
        return out


@register_task
class FieldRegressionTask(Task):
    name = "field-regression"
    monitor = "rmse"
    higher_is_better = False
    prediction_writer = "adaptlab.predict.fields:FieldWriter"

    def __init__(self, output_names: list[str], target_shape: tuple[int, ...],
                 coords: dict[str, list[float]], residual_channel: int | None = None,
                 valid_cells: list[list[bool]] | None = None) -> None:
        self.output_names = output_names
        self.residual_channel = residual_channel
        self.target_shape = tuple(target_shape)
        self.field_output = len(self.target_shape) == 3
        self.weights = latitude_weights(coords, self.target_shape[-2]) if self.field_output \
            else None
        if valid_cells is not None and self.field_output:
            valid = torch.tensor(valid_cells, dtype=torch.float32)
            if tuple(valid.shape) != self.target_shape[-2:]:
                raise AdaptlabError(f"valid_cells has shape {tuple(valid.shape)}, the target "
                                    f"grid {self.target_shape[-2:]}")
            self.weights = self.weights * valid

    def build_model(self, backbone: Backbone, head_options):
        outputs = self.target_shape[0]
        if self.field_output:
            if backbone.feature_layout != "grid":
                raise AdaptlabError(f"backbone {backbone.name!r} gives no feature map on the "
                                    "input grid; a field target needs one (field_unet)")
            head = nn.Conv2d(backbone.feature_dim, outputs, 1)
        else:
            head = nn.Linear(backbone.num_features, outputs)
        if self.residual_channel is not None and (not self.field_output or outputs != 1):
            raise AdaptlabError("residual_channel needs a single-field target")
        if self.residual_channel is not None:
            nn.init.zeros_(head.weight)  # start at persistence
            nn.init.zeros_(head.bias)
        return FieldRegressionModel(backbone.module, head, self.field_output,
                                    self.residual_channel), \
            backbone.layer_map.prefixed("backbone", head="task_head")

    def _weighted(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over everything but the batch, area-weighted for fields: [B]."""
        if not self.field_output:
            return values.flatten(1).mean(dim=1)
        w = self.weights.to(values.device)
        # The weights' total over the grid, not the cell count: masked cells weigh nothing.
        total = w.expand(values.shape[-2:]).sum() * values.shape[1]
        return (values * w).flatten(1).sum(dim=1) / total

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._weighted((outputs.float() - targets.float()) ** 2).mean()

    def _acc(self, predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        if not self.field_output:
            return torch.full((len(truth),), float("nan"))
        w = self.weights.to(truth.device)

        def centred(x):
            return x - (x * w).sum(dim=(-2, -1), keepdim=True) / w.expand(x.shape[-2:]).sum()

        p, t = centred(predicted), centred(truth)
        top = (p * t * w).flatten(1).sum(1)
        bottom = torch.sqrt((p * p * w).flatten(1).sum(1) * (t * t * w).flatten(1).sum(1))
        return top / bottom.clamp(min=1e-12)

    def _metrics(self, predicted: torch.Tensor, truth: torch.Tensor) -> dict:
        error = predicted - truth
        acc = self._acc(predicted, truth)
        return {"rmse": float(torch.sqrt(self._weighted(error ** 2).mean())),
                "mae": float(self._weighted(error.abs()).mean()),
                "acc": float(acc.nanmean()) if not torch.isnan(acc).all() else None,
                "samples": int(len(truth))}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        predicted, truth = [], []
        for inputs, targets in loader:
            predicted.append(model(inputs).float().cpu())
            truth.append(targets.float().cpu())
        predicted, truth = torch.cat(predicted), torch.cat(truth)
        metrics = self._metrics(predicted, truth)
        metrics["loss"] = float(self.loss(predicted, truth))
        return metrics

    @torch.no_grad()
    def baselines(self, model, loaders: dict, source_loader, device) -> dict:
        def gather(loader):
            inputs, targets = zip(*[(x.float().cpu(), y.float().cpu()) for x, y in loader],
                                  strict=True)
            return torch.cat(inputs), torch.cat(targets)

        data = {split: gather(loader) for split, loader in loaders.items()}
        mean = data["train"][1].mean(dim=0, keepdim=True)
        out = {}
        if self.residual_channel is not None:
            def last(x):
                c = self.residual_channel % x.shape[1]
                return x[:, c:c + 1]

            out["persistence"] = {split: self._metrics(last(x), y)
                                  for split, (x, y) in data.items()}
        out["climatology"] = {split: self._metrics(mean.expand_as(y), y)
                              for split, (_, y) in data.items()}
        return out

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        acc = f", ACC {test['acc']:.3f} (baseline {base['acc']:.3f})" \
            if test.get("acc") is not None and base.get("acc") is not None else ""
        return (f"held-out area-weighted RMSE {test['rmse']:.3f} (baseline "
                f"{base['rmse']:.3f}){acc}")

    @classmethod
    def from_data(cls, data, backbone, options: TaskOptions) -> FieldRegressionTask:
        if data.samples.get("train"):
            shape = data.samples["train"][0][1].shape
        else:  # a run rebuilt from data.json, without its data: its loader recorded the shape
            shape = data.preprocessing.get("target_shape")
            if not shape:
                raise AdaptlabError("the data's description records no target shape; load the "
                                    "run with its data")
        return cls(data.class_names, shape, data.coords, data.task_options.get("residual_channel"),
                   data.task_options.get("valid_cells"))

    @classmethod
    def explain_reduction(cls, model: nn.Module, backbone) -> ScoreReduction:
        """A predicted field's mean (per output channel): what drives the map the model
        predicts up or down as a whole. A model predicting the change from an input field is
        scored on the change: the pass-through of that field is the same for any weights and
        would otherwise dominate every map."""
        return functools.partial(field_mean, channel=residual_channel_of(model))

    @classmethod
    def explain_output_names(cls, model: nn.Module, class_names: list[str]) -> list[str]:
        what = "change of " if residual_channel_of(model) is not None else ""
        return [f"mean predicted {what}{name}" for name in class_names]


def residual_channel_of(model: nn.Module) -> int | None:
    """The input channel a (possibly wrapped) field model predicts the change from."""
    try:
        return model.residual_channel  # a peft wrapper forwards the attribute
    except AttributeError:
        return None


def field_mean(outputs: torch.Tensor, inputs: torch.Tensor, channel: int | None
               ) -> torch.Tensor:
    """[B, C, H, W] predicted fields -> [B, C] means, less the input field at ``channel``;
    vector outputs pass through."""
    if channel is not None and outputs.ndim == 4:
        channel %= inputs.shape[1]
        outputs = outputs - inputs[:, channel:channel + 1]
    return outputs.flatten(2).mean(dim=2) if outputs.ndim == 4 else outputs
