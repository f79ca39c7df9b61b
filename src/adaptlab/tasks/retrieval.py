"""Retrieval with a bi-encoder: one shared encoder embeds queries (docstrings) and documents
(code); training is contrastive with in-batch negatives; evaluation ranks every document of a
split for every query (MRR, recall@k).

The task head is a linear projection initialised to the identity, so the model before
training is exactly the pre-trained encoder: that model is the zero-shot baseline, and
head-only training starts from it rather than from a random map.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.tasks.base import Task, call_backbone, move_to
from adaptlab.tasks.registry import register_task

TEMPERATURE = 0.05
RECALL_AT = (1, 5, 10)


class BiEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, width: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_head = nn.Linear(width, width)
        with torch.no_grad():
            self.task_head.weight.copy_(torch.eye(width))
            self.task_head.bias.zero_()

    def embed(self, inputs) -> torch.Tensor:
        return F.normalize(self.task_head(call_backbone(self.backbone, inputs)).float(), dim=-1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(batch["query"]), self.embed(batch["document"])


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: each query's own document against the batch's other documents."""
    logits = queries @ documents.T / TEMPERATURE
    targets = torch.arange(len(queries), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def ranking_metrics(queries: torch.Tensor, documents: torch.Tensor) -> dict:
    """Query i's relevant document is document i."""
    similarity = queries @ documents.T
    correct = similarity.diagonal().unsqueeze(1)
    ranks = (similarity > correct).sum(dim=1) + 1  # 1 = best
    metrics = {"mrr": float((1.0 / ranks.float()).mean()), "samples": int(len(ranks)),
               "median_rank": float(ranks.float().median())}
    for k in RECALL_AT:
        metrics[f"recall_at_{k}"] = float((ranks <= k).float().mean())
    return metrics


@register_task
class RetrievalTask(Task):
    name = "retrieval"
    monitor = "mrr"
    initial_is_candidate = True
    prediction_writer = "adaptlab.predict.retrieval:TopKRetrievalWriter"
    explain_refusal = ("retrieval runs are not supported yet (they score pairs); explain a "
                       "classification run of the same data instead")

    def build_model(self, backbone, head_options):
        model = BiEncoder(backbone.module, backbone.num_features)
        return model, backbone.layer_map.prefixed("backbone", head="task_head")

    def loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(*outputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        queries, documents = [], []
        for batch, _ in loader:
            q, d = model(batch)
            queries.append(q.float().cpu())
            documents.append(d.float().cpu())
        q, d = torch.cat(queries), torch.cat(documents)
        metrics = ranking_metrics(q, d)
        metrics["loss"] = float(contrastive_loss(q, d))
        return metrics

    def baselines(self, model: nn.Module, loaders: dict, source_loader, device) -> dict:
        """The untrained bi-encoder is the pre-trained encoder itself (identity head)."""
        model.to(device)
        result = {"zeroshot_encoder": {split: self._evaluate_on(model, loader, device)
                                       for split, loader in loaders.items()}}
        model.to("cpu")
        return result

    def _evaluate_on(self, model: nn.Module, loader, device) -> dict:
        """``evaluate`` with text in batches of similar length where the loader allows."""
        from adaptlab.engine.length_order import evaluate_in_length_order

        metrics = evaluate_in_length_order(self, model, loader, device)
        return metrics if metrics is not None else self.evaluate(model, _on(loader, device))

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        return (f"held-out MRR {test['mrr']:.3f} (zero-shot {base['mrr']:.3f}), recall@1 "
                f"{test['recall_at_1']:.3f} (zero-shot {base['recall_at_1']:.3f})")


def _on(loader, device):
    for batch, labels in loader:
        yield move_to(batch, device), labels
