"""Forecasting: a pre-trained encoder and quantile head, quantile or point loss, walk-forward
metrics in the data's own units against seasonal-naive.

Metrics per window, averaged over windows: MAE and RMSE of the median forecast, MASE (MAE over
the context's in-sample seasonal-naive MAE, Hyndman and Koehler's scale), scaled quantile loss
(the pinball loss over all quantiles on the same scale, a CRPS approximation) and the share of
targets inside the outermost quantile interval. Lower is better for all but coverage.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import ScoreReduction, Task, TaskOptions, move_to
from adaptlab.tasks.registry import register_task


class ForecastModel(nn.Module):
    """``task_head(backbone(context))``: normalised context -> normalised quantiles, the
    first ``horizon`` steps of the head's native horizon."""

    head_is_pretrained = True  # the forecaster's own head: no new head's learning-rate floor

    def __init__(self, backbone: nn.Module, head: nn.Module, horizon: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_head = head
        self.horizon = horizon

    def forward(self, batch: dict) -> torch.Tensor:
        hidden = self.backbone(batch["context"], batch["observed"])
        return self.task_head(hidden, batch["context"], batch["observed"])[:, :self.horizon]


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor
                 ) -> torch.Tensor:
    """Per-window mean pinball loss over horizon and quantile levels: ``[B]``."""
    error = target.unsqueeze(-1) - quantiles.float()
    return torch.maximum(levels * error, (levels - 1) * error).mean(dim=(1, 2))


def seasonal_naive(context: torch.Tensor, observed: torch.Tensor, season: torch.Tensor,
                   horizon: int) -> torch.Tensor:
    """Repeat the last observed season; windows too short for a season repeat the last value."""
    length = context.shape[1]
    steps = torch.arange(horizon, device=context.device)
    counts = observed.sum(dim=1)
    season = torch.where(season <= counts, season, torch.ones_like(season)).clamp(min=1)
    index = length - season.unsqueeze(1) + (steps.unsqueeze(0) % season.unsqueeze(1))
    return torch.gather(context, 1, index)


def mase_scale(context: torch.Tensor, observed: torch.Tensor, season: torch.Tensor
               ) -> torch.Tensor:
    """In-sample seasonal-naive MAE of each context (lag 1 when the context is shorter than a
    season plus one); a constant context gets scale 1 so its MASE stays finite."""
    scales = []
    for row, mask, m in zip(context, observed, season.tolist(), strict=True):
        values = row[mask]
        lag = m if len(values) > m else 1
        diffs = (values[lag:] - values[:-lag]).abs()
        scale = diffs.mean() if len(diffs) else torch.tensor(0.0, dtype=row.dtype)
        scales.append(scale if scale > 0 else torch.tensor(1.0, dtype=row.dtype))
    return torch.stack(scales)


def median_level(outputs: torch.Tensor, inputs: torch.Tensor, median: int) -> torch.Tensor:
    """[B, horizon, quantiles] forecasts -> [B, 1] median level."""
    return outputs[..., median].mean(dim=1, keepdim=True)

@register_task
class ForecastingTask(Task):
    name = "forecasting"
    evaluation_reads_inputs = True  # errors are scaled by each window's context
    prediction_writer = "adaptlab.predict.forecasting:ForecastWriter"
    monitor = "mase"
    higher_is_better = False
    initial_is_candidate = True

    def __init__(self, levels: tuple[float, ...], horizon: int, loss_kind: str = "quantile"
                 ) -> None:
        if loss_kind not in ("quantile", "point"):
            raise AdaptlabError(f"forecast_loss {loss_kind!r} is not 'quantile' or 'point'")
        self.levels = torch.tensor(levels, dtype=torch.float32)
        self.median = int(torch.argmin((self.levels - 0.5).abs()))
        self.horizon = horizon
        self.loss_kind = loss_kind

    @classmethod
    def from_data(cls, data, backbone, options: TaskOptions) -> ForecastingTask:
        if backbone is None or backbone.series is None:
            raise AdaptlabError("forecasting needs a forecasting backbone (one with a series "
                                "preprocessing and a pre-trained head)")
        # A run read back without its data has its horizon from data.json; older runs
        # recorded it only in their windows.
        windows = data.samples.get("train") or data.samples.get("test") or []
        horizon = data.task_options.get("horizon") or (windows[0][0].horizon if windows else None)
        if horizon is None:
            raise AdaptlabError(f"the forecasting data {data.source!r} records no horizon (a run "
                                "made before data.json kept it); load the run with its data")
        return cls(backbone.series.quantiles, horizon, options.forecast_loss)

    @classmethod
    def explain_reduction(cls, model: nn.Module, backbone) -> ScoreReduction:
        """One score: the forecast's median level (the median quantile averaged over the
        horizon)."""
        levels = list(backbone.series.quantiles)
        median = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
        return functools.partial(median_level, median=median)

    @classmethod
    def explain_output_names(cls, model: nn.Module, class_names: list[str]) -> list[str]:
        return ["forecast level"]

    @classmethod
    def explain_label(cls, target) -> None:
        return None

    @classmethod
    def explain_display(cls, target) -> dict:
        return {"future": target.numpy()}

    def build_model(self, backbone, head_options):
        if backbone.series is None or backbone.pretrained_head is None:
            raise AdaptlabError(f"backbone {backbone.name!r} is not a forecasting backbone")
        if self.horizon > backbone.series.horizon:
            raise AdaptlabError(f"horizon {self.horizon} is longer than backbone "
                                f"{backbone.name!r} forecasts ({backbone.series.horizon} steps)")
        model = ForecastModel(backbone.module, backbone.pretrained_head, self.horizon)
        return model, backbone.layer_map.prefixed("backbone", head="task_head")

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_kind == "point":
            return (outputs[..., self.median].float() - labels).abs().mean()
        return pinball_loss(outputs, labels, self.levels.to(outputs.device)).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        device = next(model.parameters()).device
        rows = []
        for batch, labels in loader:
            batch = move_to(batch, device)
            rows.append(self._window_metrics(model(batch).float(), labels.to(device), batch))
        return self._summarise(rows)

    def _window_metrics(self, quantiles: torch.Tensor, target: torch.Tensor, batch: dict
                        ) -> dict[str, torch.Tensor]:
        """Per-window errors in the data's units (quantiles and target are normalised)."""
        loc = batch["loc"].unsqueeze(1).float()
        span = batch["span"].unsqueeze(1).float()
        context = batch["context"] * span + loc
        scale = mase_scale(context, batch["observed"], batch["season"])
        y = target * span + loc
        error = quantiles[..., self.median] * span + loc - y
        levels = self.levels.to(quantiles.device)
        pinball = pinball_loss(quantiles * span.unsqueeze(-1) + loc.unsqueeze(-1), y, levels)
        inside = ((y >= quantiles[..., 0] * span + loc) & (y <= quantiles[..., -1] * span + loc))
        return {"mae": error.abs().mean(1), "mse": (error ** 2).mean(1),
                "mase": error.abs().mean(1) / scale, "scaled_quantile_loss": pinball / scale,
                "interval_coverage": inside.float().mean(1),
                "loss": pinball_loss(quantiles, target, levels)}

    @staticmethod
    def _summarise(rows: list[dict[str, torch.Tensor]]) -> dict:
        joined = {key: torch.cat([row[key] for row in rows]).cpu() for key in rows[0]}
        metrics = {key: float(values.mean()) for key, values in joined.items() if key != "mse"}
        metrics["rmse"] = float(joined["mse"].mean().sqrt())
        metrics["samples"] = int(len(joined["mae"]))
        return metrics

    def seasonal_naive_metrics(self, loader, device) -> dict:
        rows = []
        for batch, labels in loader:
            batch = move_to(batch, device)
            forecast = seasonal_naive(batch["context"], batch["observed"], batch["season"],
                                      labels.shape[1])
            # A point forecast as every quantile: its pinball loss is its absolute error / 2.
            quantiles = forecast.unsqueeze(-1).expand(-1, -1, len(self.levels))
            rows.append(self._window_metrics(quantiles, labels.to(device), batch))
        metrics = self._summarise(rows)
        metrics.pop("interval_coverage")
        return metrics

    def baselines(self, model: nn.Module, loaders: dict, source_loader, device) -> dict:
        """Zero-shot: the pre-trained forecaster as shipped; seasonal naive for reference."""
        model.to(device)
        result = {"zeroshot_forecaster": {split: self.evaluate(model, loader)
                                          for split, loader in loaders.items()},
                  "seasonal_naive": {split: self.seasonal_naive_metrics(loader, device)
                                     for split, loader in loaders.items()}}
        model.to("cpu")
        return result

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        naive = metrics["reference"]["seasonal_naive"]["test"]
        return (f"held-out MASE {test['mase']:.3f} (zero-shot {base['mase']:.3f}, seasonal naive "
                f"{naive['mase']:.3f}), MAE {test['mae']:.3f} (zero-shot {base['mae']:.3f})")
