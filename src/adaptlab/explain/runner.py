"""Run one attribution method over samples: plan memory, pre-flight, route on failure.

A method that cannot explain the model (unsupported input kind, a graph DeepExplainer gets
wrong, an exception inside the library) hands over to its declared fallback, and the reason
goes into ``notes``: the report says which method ran and why, and no user sees a raw
autograd error. Running out of memory halves the rows and tries the same method again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.explain.budget import BatchPlan, plan_rows
from adaptlab.explain.methods import MethodContext, get_method
from adaptlab.explain.preflight import prepare_clean_graph
from adaptlab.explain.target import ExplainTarget, Sample, ScoreModule

MAX_CHUNK = 16


@dataclass
class Attributions:
    requested: str
    method: str  # the method that produced the values (after any routing)
    library: str
    targets: list[int]
    attributions: list[torch.Tensor]  # per sample, input-shaped (embedding space for tokens)
    features: list[torch.Tensor]  # per sample, the map a renderer draws
    seconds: float
    plan: BatchPlan
    notes: list[str] = field(default_factory=list)
    completeness_gaps: list[float] = field(default_factory=list)


def set_extras(module: nn.Module, extras: dict) -> None:
    """Give the sample's non-attributed inputs to every score module inside ``module``
    (a patched copy holds its own)."""
    for sub in module.modules():
        if isinstance(sub, ScoreModule):
            sub.set_extras(extras)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def predicted_targets(target: ExplainTarget, score: nn.Module, samples: list[Sample]) -> list[int]:
    out = []
    for sample in samples:
        set_extras(score, sample.extras)
        out.append(int(score(sample.inputs.to(_device(score))).argmax(dim=1)[0]))
    return out


def _chunks(samples: list[Sample], one_sample: bool, rows: int) -> list[list[Sample]]:
    size = 1 if one_sample else max(1, min(MAX_CHUNK, rows))
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def _run_method(method, ctx: MethodContext, samples: list[Sample], targets: list[int]
                ) -> list[torch.Tensor]:
    one = method.one_sample or not ctx.target.batchable
    index = {id(s): i for i, s in enumerate(samples)}
    out: list[torch.Tensor] = []
    for chunk in _chunks(samples, one, ctx.rows):
        if one:
            set_extras(ctx.score, chunk[0].extras)
        values = method.attribute(ctx, chunk, [targets[index[id(s)]] for s in chunk])
        out.extend(v.unsqueeze(0).detach().float().cpu() for v in values)
    return out


def attribute(target: ExplainTarget, samples: list[Sample], method: str,
              model: nn.Module | None = None, targets: list[int] | None = None,
              settings: dict | None = None, plan: BatchPlan | None = None) -> Attributions:
    """Attributions of ``samples`` under ``method`` (routed when it cannot run)."""
    score = target.score_module(model).eval()
    set_extras(score, samples[0].extras)
    plan = plan or plan_rows(score, samples[0].inputs)
    if targets is None:
        targets = predicted_targets(target, score, samples)
    notes: list[str] = []
    settings = dict(settings or {})
    name, tried = method, []
    start = time.perf_counter()
    rows = plan.rows
    while True:
        chosen = get_method(name)
        reason = chosen.unsupported(target)
        module = score
        if reason is None and chosen.needs_clean_graph:
            set_extras(score, samples[0].extras)
            prepared = prepare_clean_graph(score, samples[0].inputs.to(_device(score)))
            reason = prepared.refused
            if reason is None:
                module = prepared.module
                notes.append(f"{name}: {prepared.note}")
        if reason is None:
            ctx = MethodContext(target, module, rows, settings, samples)
            try:
                values = _run_method(chosen, ctx, samples, targets)
                break
            except torch.OutOfMemoryError:
                if rows == 1:
                    reason = f"{name} ran out of memory with one row per pass"
                else:
                    rows = max(1, rows // 2)
                    notes.append(f"{name}: out of memory; retrying with {rows} rows per pass")
                    _empty_cache(score)
                    continue
            except Exception as exc:  # noqa: BLE001 - routed and reported, never raised raw
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                reason = f"{name} failed ({type(exc).__name__}: {first})"
        tried.append(name)
        if chosen.fallback is None or chosen.fallback in tried:
            raise AdaptlabError(f"explain: no attribution method could run; last reason: {reason}")
        notes.append(f"{name} routed to {chosen.fallback}: {reason}")
        name = chosen.fallback
    values_are_features = chosen.space == "features"
    attributions, features = [], []
    for sample, value in zip(samples, values, strict=True):
        if values_are_features:
            features.append(value[0])
            attributions.append(target.from_features(value, sample.inputs)[0])
        else:
            value = value.reshape(sample.inputs.shape)
            attributions.append(value[0])
            features.append(target.to_features(value)[0])
    plan = BatchPlan(rows, plan.bytes_per_row, plan.budget_bytes, plan.device)
    return Attributions(method, name, chosen.library, list(targets), attributions, features,
                        time.perf_counter() - start, plan, notes,
                        list(settings.get("completeness_gaps", [])))


def _empty_cache(module: nn.Module) -> None:
    if _device(module).type == "cuda":
        torch.cuda.empty_cache()
