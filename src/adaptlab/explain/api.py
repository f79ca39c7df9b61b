"""``explain(run, method, samples)``: attributions for a finished run, checked, compared
with the unadapted model, and written as a report beside the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.errors import AdaptlabError
from adaptlab.explain.checks import (
    faithfulness,
    infidelity_and_sensitivity,
    pearson_correlation,
    randomisation_check,
    rank_correlation,
)
from adaptlab.explain.runner import Attributions, attribute
from adaptlab.explain.target import ExplainTarget, Sample, make_target, task_class
from adaptlab.run_loading import LoadedRun, load_run

DEFAULT_METHOD = "integrated_gradients"
DEFAULT_SAMPLES = 8


@dataclass
class Explanation:
    """Everything the report shows; ``to_json`` is ``attributions.json``."""

    run: LoadedRun
    target: ExplainTarget
    samples: list[Sample]
    result: Attributions
    split: str
    checks: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    unadapted_features: list[torch.Tensor] | None = None
    unadapted_label: str = "unadapted"
    seconds: dict[str, float] = field(default_factory=dict)

    def label_name(self, index: int | None) -> str | None:
        names = self.target.output_names
        return names[index] if index is not None and index < len(names) else None


def choose_samples(run: LoadedRun, split: str, samples: int | list[int] | None) -> list[int]:
    """Explicit indices, or ``samples`` items spread over the classes (round robin) where
    the task's labels are classes (``Task.explain_by_class``), else evenly over the split."""
    items = run.data.samples.get(split)
    if not items:
        raise AdaptlabError(f"explain: split {split!r} of {run.run_dir} is empty")
    if isinstance(samples, list):
        bad = [i for i in samples if not 0 <= int(i) < len(items)]
        if bad:
            raise AdaptlabError(f"explain: sample index {bad[0]} is outside split {split!r} "
                                f"(0..{len(items) - 1})")
        return [int(i) for i in samples]
    count = int(samples or run.domain.explain_defaults.get("samples", DEFAULT_SAMPLES))
    if count < 1:
        raise AdaptlabError(f"explain: samples={count}; explain at least one")
    if not task_class(run.data.task).explain_by_class:
        return sorted({int(i) for i in np.linspace(0, len(items) - 1, min(count, len(items)))})
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(items):
        by_class.setdefault(int(label), []).append(i)
    chosen: list[int] = []
    while len(chosen) < min(count, len(items)):
        for label in sorted(by_class):
            if by_class[label] and len(chosen) < count:
                chosen.append(by_class[label].pop(0))
    return chosen


def explain(run: str | Path | LoadedRun, method: str | None = None,
            samples: int | list[int] | None = None, split: str = "test", checks: bool = True,
            compare: bool = True, settings: dict | None = None, report: bool = True
            ) -> Explanation:
    """Explain a finished run's predictions on ``samples`` of ``split``.

    ``method``: an attribution method name (``adaptlab.explain.method_names()``), default
    the domain's. Writes ``report/index.html`` and ``report/attributions.json`` in the run
    folder unless ``report`` is False.
    """
    from adaptlab.data.torch_datasets import make_torch_dataset

    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    refusal = task_class(loaded.data.task).explain_refusal
    if refusal:
        raise AdaptlabError(f"explain: {refusal}")
    defaults = loaded.domain.explain_defaults
    method = method or defaults.get("method", DEFAULT_METHOD)
    settings = {**defaults.get("settings", {}), **(settings or {})}
    target = make_target(loaded.data.modality, loaded.model, loaded.backbone, loaded.data.task,
                         loaded.data.class_names)
    target.layer_map = loaded.layer_map
    valid = loaded.data.task_options.get("valid_cells")
    if valid is not None:  # cells without data: their attribution is zero by definition
        target.valid = torch.tensor(valid, dtype=torch.bool)
    dataset = make_torch_dataset(loaded.data, split, loaded.backbone, False,
                                 {"image_size": loaded.config.image_size})
    chosen = [target.sample(dataset, i) for i in choose_samples(loaded, split, samples)]
    try:
        explanation = _explain(loaded, target, chosen, method, split, checks, compare, settings)
    finally:
        target.close()
    if report and isinstance(run, str | Path):
        from adaptlab.report import write_report

        write_report(explanation)
    return explanation


def _explain(loaded: LoadedRun, target: ExplainTarget, samples: list[Sample], method: str,
             split: str, run_checks: bool, compare: bool, settings: dict) -> Explanation:
    result = attribute(target, samples, method, settings=dict(settings))
    valid = getattr(target, "valid", None)
    if valid is not None:
        result.notes.append(f"{int((~valid).sum())} of {valid.numel()} grid cells carry no "
                            "data (a fixed mask): their attributions are zero and the checks "
                            "leave them out")
    explanation = Explanation(loaded, target, samples, result, split,
                              seconds={"attribution": result.seconds})
    score = target.score_module()
    if run_checks:
        start = time.perf_counter()
        explanation.checks["faithfulness"] = faithfulness(target, score, samples, result,
                                                          result.plan.rows)
        explanation.checks["infidelity_sensitivity"] = infidelity_and_sensitivity(
            target, score, samples, result, dict(settings), result.plan.rows)
        explanation.checks["randomisation"] = randomisation_check(
            target, loaded.model, samples, result, dict(settings)).to_dict()
        explanation.seconds["checks"] = time.perf_counter() - start
    if compare:
        start = time.perf_counter()
        with loaded.unadapted() as before:
            earlier = attribute(target, samples, result.method, model=before,
                                targets=result.targets, settings=dict(settings), plan=result.plan)
            target.close()  # a token model's embedding hook goes before the adapter is back
        explanation.unadapted_features = earlier.features
        explanation.unadapted_label = loaded.before_label
        explanation.comparison = compare_maps(target, samples, earlier.features, result.features)
        if loaded.config.init_from:
            explanation.comparison["what"] = (
                "the same samples and target outputs explained by the source run's model "
                f"({loaded.config.init_from}: before transfer) and by this run's (after); "
                "1 = adapting to the target left the explanation unchanged")
        explanation.seconds["comparison"] = time.perf_counter() - start
    return explanation


def compare_maps(target: ExplainTarget, samples: list[Sample], before: list[torch.Tensor],
                 after: list[torch.Tensor]) -> dict[str, Any]:
    """Similarity of the unadapted and adapted models' maps, per sample and on average."""
    rank = [rank_correlation(a, b, target.eligible(s)) for s, a, b in
            zip(samples, before, after, strict=True)]
    linear = [pearson_correlation(a, b, target.eligible(s)) for s, a, b in
              zip(samples, before, after, strict=True)]
    return {"mean_rank_correlation": float(np.mean(rank)),
            "mean_pearson_correlation": float(np.mean(linear)),
            "per_sample_rank": rank, "per_sample_pearson": linear,
            "what": "the same samples and target outputs explained by the unadapted model (the "
                    "pre-trained backbone; peft adapters switched off) and the adapted one; "
                    "1 = adaptation left the explanation unchanged"}
