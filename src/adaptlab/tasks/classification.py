"""Classification: backbone + new head, class-weighted loss, metrics, honest baselines.

Baselines use the unadapted backbone and no gradient step: nearest-class-mean (NCM) on the
frozen pre-trained features, predictions the most cosine-similar class prototype.
- zero-shot: prototypes from a source domain with the same classes (no target data at all);
  this is "the unadapted model" when the dataset declares a source;
- few-shot: prototypes from the target's training split (a strong reference: it already
  uses the target labels, only without adapting any weight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score
from torch import nn

from adaptlab.backbones.backbone import Backbone
from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import Task, TaskOptions, call_backbone
from adaptlab.tasks.registry import register_task


class ClassificationModel(nn.Module):
    """``task_head(backbone(x))``; ``backbone`` returns pooled features.

    The head is called ``task_head``, not ``head``: peft matches ``modules_to_save`` by string
    suffix, and ``head`` would also catch a backbone's ``conv_head``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_head = head

    def forward(self, x: torch.Tensor | Mapping) -> torch.Tensor:
        return self.task_head(call_backbone(self.backbone, x))


def build_head(num_features: int, num_classes: int, kind: str, hidden: int,
               dropout: float) -> nn.Module:
    if kind == "linear":
        return nn.Linear(num_features, num_classes)
    return nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def build_model(backbone: Backbone, num_classes: int, head_options=None
                ) -> tuple[ClassificationModel, LayerMap]:
    """The model to adapt; ``head_options`` (a StrategyConfig) shapes the head."""
    if num_classes < 2:
        raise AdaptlabError(f"classification needs at least 2 classes, got {num_classes}")
    kind = getattr(head_options, "head", "linear")
    hidden = getattr(head_options, "head_hidden", 256)
    dropout = getattr(head_options, "head_dropout", 0.2)
    model = ClassificationModel(backbone.module,
                                build_head(backbone.num_features, num_classes, kind, hidden,
                                           dropout))
    return model, backbone.layer_map.prefixed("backbone", head="task_head")


def class_weights(labels: Iterable[int], num_classes: int) -> torch.Tensor:
    """Balanced weights ``n / (k * count_c)``; a class absent from training gets weight 0."""
    counts = np.bincount(np.asarray(list(labels), dtype=np.int64), minlength=num_classes)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """One-vs-rest ROC AUC averaged over the classes present in ``y_true`` (None if < 2)."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    aucs = [roc_auc_score(y_true == c, scores[:, c]) for c in present]
    return float(np.mean(aucs))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str],
                           scores: np.ndarray | None = None) -> dict:
    labels = list(range(len(class_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    extra = {"auc": macro_auc(y_true, scores)} if scores is not None else {}
    return {**extra,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels))
        if len(set(y_true.tolist()) | set(y_pred.tolist())) > 1 else 0.0,
        "per_class_f1": {name: float(v) for name, v in zip(class_names, per_class, strict=True)},
        "samples": int(len(y_true)),
    }


@register_task
class ClassificationTask(Task):
    """Cross-entropy (optionally class-weighted), accuracy / F1 / kappa / AUC, NCM baselines.

    One task whatever the input (images, text, series, fields, point clouds): the dataset's
    modality says what the backbone reads."""

    name = "classification"
    monitor = "macro_f1"  # robust to the class imbalance real data have
    prediction_writer = "adaptlab.predict.classification:ClassProbabilityWriter"
    explain_probabilities = True
    explain_by_class = True

    def __init__(self, class_names: list[str], weights: torch.Tensor | None = None) -> None:
        self.class_names = class_names
        self.weights = weights

    @classmethod
    def from_data(cls, data, backbone, options: TaskOptions) -> ClassificationTask:
        if backbone is not None and backbone.pretrained_head is not None:
            raise AdaptlabError(f"backbone {backbone.name!r} is a forecaster with its own head; "
                                "classification needs a feature backbone")
        weights = class_weights(data.labels("train"), len(data.class_names)) \
            if options.class_weighting == "balanced" else None
        return cls(data.class_names, weights)

    def build_model(self, backbone: Backbone, head_options):
        return build_model(backbone, len(self.class_names), head_options)

    def baselines(self, model, loaders: dict, source_loader, device) -> dict:
        backbone = model.backbone.to(device)
        out = {}
        if source_loader is not None:
            out["zeroshot_ncm"] = nearest_class_mean_baseline(backbone, loaders, self.class_names,
                                                              device, prototype_loader=source_loader)
        out["fewshot_ncm"] = nearest_class_mean_baseline(backbone, loaders, self.class_names, device)
        model.to("cpu")
        return out

    def init_head(self, model, layer_map, loader, device) -> dict | None:
        from adaptlab.tasks.prototype_head import init_head_from_prototypes

        scale = init_head_from_prototypes(model, layer_map.head, loader, device,
                                          len(self.class_names))
        return None if scale is None else {"method": "prototypes", "scale": scale}

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        return (f"held-out accuracy {test['accuracy']:.3f} (baseline {base['accuracy']:.3f}), "
                f"macro-F1 {test['macro_f1']:.3f} (baseline {base['macro_f1']:.3f})")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.weights.to(logits.device) if self.weights is not None else None
        return nn.functional.cross_entropy(logits.float(), labels, weight=weight)

    def loss_denominator(self, labels: torch.Tensor) -> float:
        # cross_entropy's weighted mean divides by the weights of the batch's labels
        if self.weights is None:
            return float(len(labels))
        return float(self.weights[labels.cpu()].sum())

    @torch.no_grad()
    def batch_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(dim=-1) == labels).sum())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        truth, probs, losses = [], [], []
        for inputs, labels in loader:
            logits = model(inputs)
            losses.append(self.loss(logits, labels).item() * len(labels))
            truth.append(labels.cpu())
            probs.append(logits.float().softmax(dim=1).cpu())
        y_true = torch.cat(truth).numpy()
        scores = torch.cat(probs).numpy()
        metrics = classification_metrics(y_true, scores.argmax(1), self.class_names, scores)
        metrics["loss"] = float(sum(losses) / max(len(y_true), 1))
        return metrics


@torch.no_grad()
def extract_features(backbone: nn.Module, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's features of every sample of ``loader`` and their labels, in its order
    (text is run in batches of similar length: adaptlab.engine.length_order)."""
    from adaptlab.engine.length_order import outputs_in_order

    backbone.eval()
    feats, labels = outputs_in_order(lambda inputs: call_backbone(backbone, inputs).float(),
                                     loader, device)
    return torch.stack(feats), torch.stack(labels)


def nearest_class_mean_baseline(backbone: nn.Module, loaders: dict, class_names: list[str],
                                device, prototype_loader=None) -> dict[str, dict]:
    """Metrics of cosine nearest-class-mean on frozen features, for every split.

    Prototypes come from ``prototype_loader`` (a source domain) when given, else from the
    training split.
    """
    from adaptlab.tasks.prototype_head import cosine_prototypes

    train_x, train_y = extract_features(backbone, prototype_loader or loaders["train"], device)
    prototypes = cosine_prototypes(train_x, train_y, len(class_names))
    out = {}
    for split, loader in loaders.items():
        x, y = (train_x, train_y) if split == "train" and prototype_loader is None \
            else extract_features(backbone, loader, device)
        similarity = nn.functional.normalize(x, dim=1) @ prototypes.T
        out[split] = classification_metrics(y.numpy(), similarity.argmax(dim=1).numpy(),
                                            class_names, similarity.numpy())
    return out
