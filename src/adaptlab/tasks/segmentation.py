"""Per-point segmentation: a label for every point of a cloud (part segmentation, LiDAR
classes).

A backbone whose ``feature_layout`` is ``"points"`` gives per-point features [B, N, F]
from ``forward_features`` (F its ``feature_dim``); a shared per-point MLP head gives
[B, N, K] logits. Loss: cross-entropy over points, weighted by the
training split's point counts per class (parts such as tails are rare). Metrics: point
accuracy and mean IoU (classes absent from both truth and prediction in a split are left
out of the mean). Baseline: nearest-class-mean on the frozen per-point features, prototypes
from a subsample of the training points.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from adaptlab.backbones.backbone import Backbone
from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import ScoreReduction, Task, TaskOptions, move_to
from adaptlab.tasks.registry import register_task

PROTOTYPE_POINTS = 64  # per training cloud: enough for class means, small in memory


class SegmentationModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_head = head

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.task_head(self.backbone.forward_features(points))


def point_class_weights(data, num_classes: int) -> torch.Tensor:
    counts = np.zeros(num_classes)
    for cloud, _ in data.samples["train"]:
        if cloud.point_labels.max() >= num_classes:
            raise AdaptlabError(f"{cloud.name}: point label {int(cloud.point_labels.max())}, "
                                f"but the data name {num_classes} classes")
        counts += np.bincount(cloud.point_labels, minlength=num_classes)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(np.sqrt(weights), dtype=torch.float32)  # sqrt: tempered, not inverse


def segmentation_metrics(truth: np.ndarray, predicted: np.ndarray, class_names: list[str]
                         ) -> dict:
    ious = {}
    for index, name in enumerate(class_names):
        union = np.sum((truth == index) | (predicted == index))
        if union:
            ious[name] = float(np.sum((truth == index) & (predicted == index)) / union)
    return {"point_accuracy": float(np.mean(truth == predicted)),
            "miou": float(np.mean(list(ious.values()))) if ious else 0.0,
            "per_class_iou": ious, "points": int(truth.size)}


@register_task
class SegmentationTask(Task):
    name = "segmentation"
    monitor = "miou"
    prediction_writer = "adaptlab.predict.segmentation:PointLabelWriter"

    def __init__(self, class_names: list[str], weights: torch.Tensor | None = None) -> None:
        self.class_names = class_names
        self.weights = weights

    def build_model(self, backbone: Backbone, head_options):
        if backbone.feature_layout != "points":
            raise AdaptlabError(f"backbone {backbone.name!r} gives no per-point features; "
                                "segmentation needs a point backbone")
        hidden = getattr(head_options, "head_hidden", 128)
        width = backbone.feature_dim
        head = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(0.2),
                             nn.Linear(hidden, len(self.class_names)))
        return SegmentationModel(backbone.module, head), \
            backbone.layer_map.prefixed("backbone", head="task_head")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.weights.to(logits.device) if self.weights is not None else None
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                           weight=weight)

    @torch.no_grad()
    def batch_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        per_cloud = (logits.argmax(dim=-1) == labels).float().mean(dim=1)
        return {"point_accuracy": float(per_cloud.sum())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        truth, predicted, losses, count = [], [], 0.0, 0
        for points, labels in loader:
            logits = model(points)
            losses += self.loss(logits, labels).item() * len(labels)
            count += len(labels)
            truth.append(labels.cpu().numpy().ravel())
            predicted.append(logits.argmax(dim=-1).cpu().numpy().ravel())
        metrics = segmentation_metrics(np.concatenate(truth), np.concatenate(predicted),
                                       self.class_names)
        metrics["loss"] = losses / max(count, 1)
        metrics["samples"] = count
        return metrics

    @torch.no_grad()
    def baselines(self, model, loaders: dict, source_loader, device) -> dict:
        backbone = model.backbone.to(device).eval()
        generator = torch.Generator().manual_seed(0)
        features, labels = [], []
        for points, point_labels in loaders["train"]:
            feats = backbone.forward_features(move_to(points, device)).float().cpu()
            pick = torch.randperm(points.shape[1], generator=generator)[:PROTOTYPE_POINTS]
            features.append(feats[:, pick].flatten(0, 1))
            labels.append(point_labels[:, pick].flatten())
        features = nn.functional.normalize(torch.cat(features), dim=1)
        labels = torch.cat(labels)
        prototypes = nn.functional.normalize(torch.stack([
            features[labels == c].mean(0) if (labels == c).any()
            else torch.zeros(features.shape[1]) for c in range(len(self.class_names))]), dim=1)
        out = {}
        for split, loader in loaders.items():
            truth, predicted = [], []
            for points, point_labels in loader:
                feats = nn.functional.normalize(
                    backbone.forward_features(move_to(points, device)).float().cpu(), dim=-1)
                predicted.append((feats @ prototypes.T).argmax(dim=-1).numpy().ravel())
                truth.append(point_labels.numpy().ravel())
            out[split] = segmentation_metrics(np.concatenate(truth), np.concatenate(predicted),
                                              self.class_names)
        model.to("cpu")
        return {"fewshot_ncm": out}

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        return (f"held-out mIoU {test['miou']:.3f} (baseline {base['miou']:.3f}), point "
                f"accuracy {test['point_accuracy']:.3f} (baseline {base['point_accuracy']:.3f})")

    @classmethod
    def from_data(cls, data, backbone, options: TaskOptions) -> SegmentationTask:
        weights = point_class_weights(data, len(data.class_names)) \
            if options.class_weighting == "balanced" else None
        return cls(data.class_names, weights)

    @classmethod
    def explain_reduction(cls, model: nn.Module, backbone) -> ScoreReduction:
        """Scores for a whole cloud: each part class's logit averaged over the points, so a
        map shows which points drive the model to call points of that class."""
        return mean_over_points

    @classmethod
    def explain_label(cls, target) -> int:
        """A cloud's label is its most common part."""
        return int(torch.mode(target).values) if torch.is_tensor(target) else int(target)


def mean_over_points(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """[B, N, K] point logits -> [B, K]."""
    return outputs.mean(dim=1)
