"""SHAP's explainers behind the one interface.

SHAP explains every output column it is given; each sample is explained against a module
that returns only its target column, which saves SHAP from computing gradients of the
other classes (its ``ranked_outputs`` option would pick the predicted class, not ours).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from adaptlab.explain.methods import AttributionMethod, register_method


class OneColumn(nn.Module):
    def __init__(self, score: nn.Module, column: int) -> None:
        super().__init__()
        self.score = score
        self.column = column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)[:, self.column:self.column + 1]


def _first_output(values) -> np.ndarray:
    """SHAP returns ``[B, *input, outputs]`` (or a list per output in older releases)."""
    if isinstance(values, list):
        return np.asarray(values[0])
    values = np.asarray(values)
    return values[..., 0] if values.ndim > 1 else values


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@register_method
class ShapGradient(AttributionMethod):
    name = "shap_gradient"
    library = "shap"
    description = "SHAP GradientExplainer (expected gradients over a background)"
    one_sample = True

    def attribute(self, ctx, samples, targets):
        import shap

        sample = samples[0]
        device = _device(ctx.score)
        background = ctx.target.background(sample, ctx.others).to(device)
        explainer = shap.GradientExplainer(OneColumn(ctx.score, targets[0]), background,
                                           batch_size=max(1, ctx.rows))
        values = explainer.shap_values(sample.inputs.to(device),
                                       nsamples=int(ctx.settings.get("nsamples", 64)))
        return torch.from_numpy(_first_output(values)).reshape(sample.inputs.shape)


@register_method
class ShapDeep(AttributionMethod):
    name = "shap_deep"
    library = "shap"
    description = "SHAP DeepExplainer (DeepLIFT rescale rules on module hooks)"
    fallback = "shap_gradient"
    needs_clean_graph = True
    one_sample = True

    def attribute(self, ctx, samples, targets):
        import shap

        sample = samples[0]
        device = _device(ctx.score)
        background = ctx.target.background(sample, ctx.others).to(device)
        column = OneColumn(ctx.score, targets[0])
        explainer = shap.DeepExplainer(column, background)
        inputs = sample.inputs.to(device)
        values = explainer.shap_values(inputs, check_additivity=False)
        attributions = torch.from_numpy(_first_output(values)).reshape(sample.inputs.shape)
        # DeepLIFT's completeness: the values sum to f(x) - E[f(background)]; the gap is
        # reported (SHAP's own check raises instead, and users read that as a crash).
        with torch.no_grad():
            expected = column(inputs).item() - column(background).mean().item()
        ctx.settings.setdefault("completeness_gaps", []).append(
            abs(float(attributions.sum()) - expected))
        return attributions


@register_method
class ShapPartition(AttributionMethod):
    name = "shap_partition"
    library = "shap"
    description = "SHAP Partition explainer with a text masker over the model's tokens"
    space = "features"
    one_sample = True
    reads_inputs = False

    def unsupported(self, target):
        return None if target.kind == "tokens" else \
            f"the text masker masks tokens; a {target.kind} model has none"

    def attribute(self, ctx, samples, targets):
        import shap

        sample = samples[0]
        target = ctx.target
        model = ctx.score.model
        device = _device(ctx.score)

        @torch.no_grad()
        def scores(texts) -> np.ndarray:
            out = []
            for start in range(0, len(texts), max(1, ctx.rows)):
                batch = target.tokenize([str(t) for t in texts[start:start + ctx.rows]])
                batch = {key: value.to(device) for key, value in batch.items()}
                out.append(model(batch)[:, targets[0]].float().cpu())
            return torch.cat(out).numpy()

        masker = shap.maskers.Text(target.backbone.tokenizer)
        explainer = shap.Explainer(scores, masker, algorithm="partition", silent=True)
        explanation = explainer([sample.display["text"]],
                                max_evals=int(ctx.settings.get("max_evals", 300)))
        values = np.asarray(explanation.values[0], dtype=np.float32)
        return align_token_values(values, sample.extras["input_ids"][0],
                                  target.backbone.tokenizer, explanation.data[0])


def align_token_values(values: np.ndarray, input_ids: torch.Tensor, tokenizer,
                       masker_tokens) -> torch.Tensor:
    """The masker's per-token values on our token row (its tokens are the same tokenizer's,
    with or without the special tokens); refuses rather than guesses when they differ."""
    length = int(input_ids.shape[0])
    if len(values) == length:
        return torch.from_numpy(values).unsqueeze(0)
    special = tokenizer.get_special_tokens_mask(input_ids.tolist(), already_has_special_tokens=True)
    ordinary = [i for i, flag in enumerate(special) if not flag]
    if len(values) != len(ordinary):
        raise ValueError(f"the text masker split the text into {len(values)} tokens, the model "
                         f"reads {length} ({len(ordinary)} without special tokens)")
    row = torch.zeros(1, length)
    row[0, ordinary] = torch.from_numpy(values)
    return row
