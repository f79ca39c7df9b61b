"""Do the attributions mean anything? Faithfulness curves, Captum's infidelity and
sensitivity, and the model-parameter randomisation sanity check (Adebayo et al. 2018)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from adaptlab.explain.runner import Attributions, attribute, set_extras
from adaptlab.explain.target import ExplainTarget, Sample

CURVE_STEPS = 20
# Attributions of a model whose weights were shuffled should no longer rank features like
# the trained model's. Above this mean rank correlation the method is judged to explain the
# input rather than the model (an edge detector passes no sanity check).
RANDOMISATION_MAX_CORRELATION = 0.5


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def _scores(target: ExplainTarget, score: nn.Module, batch: torch.Tensor, column: int,
            rows: int) -> np.ndarray:
    out = []
    for start in range(0, len(batch), rows):
        values = score(batch[start:start + rows].to(_device(score)))
        if target.task.explain_probabilities:
            values = values.softmax(dim=1)
        out.append(values[:, column].float().cpu())
    return torch.cat(out).numpy()


def _curve_inputs(target: ExplainTarget, sample: Sample, order: torch.Tensor, insertion: bool
                  ) -> torch.Tensor:
    """Inputs with the first k/STEPS of ``order``'s features taken from the baseline
    (deletion) or from the input into the baseline (insertion), k = 0..STEPS."""
    x, base = sample.inputs, target.baseline(sample)
    shape = target.eligible(sample).shape
    batch = []
    for k in range(CURVE_STEPS + 1):
        chosen = torch.zeros(int(np.prod(shape)), dtype=torch.bool)
        chosen[order[:round(len(order) * k / CURVE_STEPS)]] = True
        mask = target.expand_mask(chosen.reshape(shape))
        batch.append(torch.where(mask, x, base) if insertion else torch.where(mask, base, x))
    return torch.cat(batch)


def _normalise(curve: np.ndarray, target: ExplainTarget, full: float) -> np.ndarray:
    """Class probabilities (``Task.explain_probabilities``) stay as they are. Other scores
    (a forecast level, in the units of the scaled context, whose range is 1) become
    closeness to the full input's score, ``1 - |s - s_full|`` clipped to [0, 1], so deletion
    falls and insertion rises as for a probability, whatever the sign of the output."""
    if target.task.explain_probabilities:
        return curve
    return 1.0 - np.clip(np.abs(curve - full), 0.0, 1.0)


def _auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / CURVE_STEPS))


def faithfulness(target: ExplainTarget, score: nn.Module, samples: list[Sample],
                 result: Attributions, rows: int, seed: int = 0) -> dict:
    """Deletion and insertion AUCs by attribution order, and by a random order for scale.
    Deletion: lower is better (the score falls fast); insertion: higher is better."""
    generator = torch.Generator().manual_seed(seed)
    per_sample = []
    curves = {"deletion": [], "insertion": []}
    for sample, features, column in zip(samples, result.features, result.targets, strict=True):
        set_extras(score, sample.extras)
        eligible = target.eligible(sample).flatten().nonzero()[:, 0]
        ranked = eligible[torch.argsort(features.flatten()[eligible], descending=True)]
        shuffled = eligible[torch.randperm(len(eligible), generator=generator)]
        row = {}
        for name, insertion in (("deletion", False), ("insertion", True)):
            for label, order in (("", ranked), ("random_", shuffled)):
                values = _scores(target, score, _curve_inputs(target, sample, order, insertion),
                                 column, rows)
                full = values[-1] if insertion else values[0]
                curve = _normalise(values, target, full)
                row[f"{label}{name}_auc"] = _auc(curve)
                if not label:
                    curves[name].append(curve.tolist())
        per_sample.append(row)
    means = {key: float(np.mean([row[key] for row in per_sample])) for key in per_sample[0]}
    return {**means, "steps": CURVE_STEPS, "curves": {k: np.mean(v, axis=0).tolist()
                                                      for k, v in curves.items()}}


def infidelity_and_sensitivity(target: ExplainTarget, score: nn.Module, samples: list[Sample],
                               result: Attributions, method_settings: dict, rows: int,
                               limit: int = 3) -> dict:
    """Captum's infidelity (Gaussian perturbations) and max-sensitivity (the method re-run
    on inputs moved within a small ball), on the first ``limit`` samples: sensitivity
    re-runs the method several times per sample."""
    from captum.metrics import infidelity, sensitivity_max

    from adaptlab.explain.methods import get_method

    method = get_method(result.method)
    infid, sens = [], []
    for sample, attr, column in list(zip(samples, result.attributions, result.targets,
                                         strict=True))[:limit]:
        set_extras(score, sample.extras)
        x = sample.inputs.to(_device(score))
        spread = float(x.std().item()) or 1.0

        def perturb(inputs, spread=spread):
            noise = torch.randn_like(inputs) * 0.1 * spread
            return noise, inputs - noise

        torch.manual_seed(0)
        value = infidelity(score, perturb, x, attr.unsqueeze(0).to(x.device), target=column,
                           n_perturb_samples=16, max_examples_per_batch=min(max(1, rows), 16),
                           normalize=True)
        infid.append(float(value.item()))
        if not method.reads_inputs:
            continue

        def explain_again(inputs, sample=sample, column=column):
            if isinstance(inputs, tuple):  # Captum hands the inputs over as a tuple
                inputs = inputs[0]
            moved = [Sample(sample.index, row.unsqueeze(0).cpu(), sample.label, sample.extras)
                     for row in inputs]
            again = attribute(target, moved, result.method, model=score.model,
                              targets=[column] * len(moved), settings=method_settings,
                              plan=result.plan)
            return torch.stack(again.attributions).to(inputs.device)

        value = sensitivity_max(explain_again, x, perturb_radius=0.02 * spread,
                                n_perturb_samples=3, max_examples_per_batch=1)
        sens.append(float(value.item()))
    out = {"infidelity": float(np.mean(infid)), "samples": len(infid)}
    out["sensitivity_max"] = float(np.mean(sens)) if sens else None
    if not sens:
        out["sensitivity_note"] = f"{result.method} reads the tokens, not the embeddings " \
                                  "the perturbations move"
    return out


def shuffled_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy whose every parameter tensor has its values permuted: the same weight
    statistics (activations keep their scale), none of the learnt structure."""
    generator = torch.Generator().manual_seed(seed)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for param in clone.parameters():
            flat = param.detach().flatten()
            order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
            param.copy_(flat[order].reshape(param.shape))
    return clone


def rank_correlation(a: torch.Tensor, b: torch.Tensor, eligible: torch.Tensor) -> float:
    """Spearman correlation of two feature maps over the eligible features."""
    keep = eligible.flatten()
    x, y = a.flatten()[keep].numpy(), b.flatten()[keep].numpy()
    if len(x) < 2 or np.allclose(x, x[0]) or np.allclose(y, y[0]):
        return 0.0
    return float(spearmanr(x, y).statistic)


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eligible: torch.Tensor) -> float:
    keep = eligible.flatten()
    x, y = a.flatten()[keep].numpy(), b.flatten()[keep].numpy()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _constant(a: torch.Tensor, eligible: torch.Tensor) -> bool:
    x = a.flatten()[eligible.flatten()].numpy()
    return len(x) < 2 or bool(np.allclose(x, x[0]))


@dataclass
class RandomisationCheck:
    """``per_sample`` holds None where a map is constant: a rank correlation is undefined
    there, not 0. ``constant_maps`` counts the trained model's constant maps; any fails the
    check, as a map that ranks nothing cannot show that it depends on the weights (an
    explainer returning zeros would otherwise pass as perfectly uncorrelated). A constant
    map of the shuffled copy alone leaves its sample out of the mean."""

    mean_rank_correlation: float | None
    per_sample: list[float | None]
    passed: bool
    constant_maps: int = 0

    def to_dict(self) -> dict:
        return {"mean_rank_correlation": self.mean_rank_correlation,
                "per_sample": self.per_sample, "passed": self.passed,
                "constant_maps": self.constant_maps,
                "threshold": RANDOMISATION_MAX_CORRELATION,
                "what": "rank correlation of |attribution| between the trained model and a copy "
                        "with every weight tensor shuffled; a method that explains the model "
                        "must give clearly different maps, and a constant map fails"}


def randomisation_check(target: ExplainTarget, model: nn.Module, samples: list[Sample],
                        result: Attributions, method_settings: dict) -> RandomisationCheck:
    shuffled = shuffled_copy(model)
    again = attribute(target, samples, result.method, model=shuffled, targets=result.targets,
                      settings=method_settings, plan=result.plan)
    values: list[float | None] = []
    constant = 0
    for s, a, b in zip(samples, result.features, again.features, strict=True):
        eligible = target.eligible(s)
        if _constant(a.abs(), eligible):
            constant += 1
            values.append(None)
        elif _constant(b.abs(), eligible):
            values.append(None)
        else:
            values.append(rank_correlation(a.abs(), b.abs(), eligible))
    defined = [v for v in values if v is not None]
    mean = float(np.mean(defined)) if defined else None
    passed = constant == 0 and (mean is None or mean < RANDOMISATION_MAX_CORRELATION)
    return RandomisationCheck(mean, values, passed, constant)
