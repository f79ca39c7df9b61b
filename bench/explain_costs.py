"""Attribution cost per method and modality, and our wrapper's overhead against calling
Captum or SHAP directly on the same model, samples and settings.

Real backbones and demo data: EfficientNet-Lite0 on wildlife photos (224 px), MiniLM on
stdlib functions, Fracast-0 on CMIP6 windows; task heads are untrained (cost does not depend
on them). Direct and wrapped calls alternate, the ratio of medians is reported.

    python bench/explain_costs.py [--samples 4] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

warnings.filterwarnings("ignore")
STEPS = 32
METHODS = {
    "image": ["integrated_gradients", "saliency", "noise_tunnel", "occlusion", "gradcam",
              "shap_gradient", "shap_deep"],
    "tokens": ["layer_integrated_gradients", "integrated_gradients", "saliency", "occlusion",
               "shap_gradient", "shap_partition"],
    "series": ["integrated_gradients", "saliency", "occlusion", "shap_gradient"],
}


def _classifier(backbone, data, modality: str, device: str):
    """An untrained head on ``backbone`` and the test split, as an explain target."""
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.explain.target import make_target
    from adaptlab.tasks.classification import build_model

    model, layer_map = build_model(backbone, len(data.class_names))
    model.to(device).eval()
    target = make_target(modality, model, backbone, "classification", data.class_names)
    target.layer_map = layer_map
    return target, make_torch_dataset(data, "test", backbone, False, {})


def image_case(count: int, device: str):
    from adaptlab.backbones.offline import efficientnet_lite0
    from adaptlab_wildlife.datasets import load_photos

    target, dataset = _classifier(efficientnet_lite0(), load_photos({"seed": 0}), "image", device)
    return "EfficientNet-Lite0, wildlife photos 224 px", target, \
        [target.sample(dataset, i) for i in range(count)]


def token_case(count: int, device: str):
    from adaptlab_code.datasets import load_stdlib_modules

    from adaptlab.backbones.hf_encoders import minilm

    target, dataset = _classifier(minilm(), load_stdlib_modules({"seed": 0}), "text", device)
    return "MiniLM, stdlib functions", target, [target.sample(dataset, i) for i in range(count)]


def series_case(count: int, device: str):
    from adaptlab.backbones.fracast import fracast
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.explain.target import make_target
    from adaptlab.tasks.forecasting import ForecastingTask
    from adaptlab_timeseries.datasets import load_cmip6_arctic

    backbone = fracast()
    data = load_cmip6_arctic({"seed": 0})
    task = ForecastingTask(backbone.series.quantiles, 24, "quantile")
    model, _ = task.build_model(backbone, None)
    model.to(device).eval()
    target = make_target("series-windows", model, backbone, "forecasting", [])
    dataset = make_torch_dataset(data, "test", backbone, False, {})
    return "Fracast-0, CMIP6 windows (24-month forecast)", target, \
        [target.sample(dataset, i) for i in range(0, count * 10, 10)]


def direct_call(kind: str, method: str, target, samples, targets, rows: int):
    """What a user writes with Captum or SHAP alone, doing the same work as our wrapper."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    score = target.score_module()
    device = next(score.parameters()).device
    if method == "integrated_gradients" and kind == "image":
        inputs = torch.cat([s.inputs for s in samples]).to(device)
        return IntegratedGradients(score).attribute(inputs, baselines=torch.zeros_like(inputs),
                                                    target=targets, n_steps=STEPS,
                                                    internal_batch_size=rows)
    if method == "integrated_gradients":  # series: one window at a time (its own mask)
        for sample, column in zip(samples, targets, strict=True):
            score.set_extras(sample.extras)
            IntegratedGradients(score).attribute(sample.inputs.to(device),
                                                 baselines=target.baseline(sample).to(device),
                                                 target=column, n_steps=STEPS,
                                                 internal_batch_size=rows)
        return None
    if method == "layer_integrated_gradients":
        model = target.model
        for sample, column in zip(samples, targets, strict=True):
            mask = sample.extras["attention_mask"].to(device)
            ids = sample.extras["input_ids"].to(device)

            def forward(batch_ids, mask=mask):
                return model({"input_ids": batch_ids,
                              "attention_mask": mask.expand(len(batch_ids), -1)})

            LayerIntegratedGradients(forward, target.embedding()).attribute(
                ids, baselines=target.baseline_ids(ids), target=column, n_steps=STEPS,
                internal_batch_size=rows)
        return None
    if method == "shap_gradient":
        import shap

        background = torch.cat([target.baseline(samples[0])] +
                               [s.inputs for s in samples[1:]]).to(device)
        explainer = shap.GradientExplainer(score, background, batch_size=rows)
        for sample in samples:
            explainer.shap_values(sample.inputs.to(device), nsamples=64, ranked_outputs=1)
        return None
    raise ValueError(method)


OVERHEAD = [("image", "integrated_gradients"), ("image", "shap_gradient"),
            ("tokens", "layer_integrated_gradients"), ("series", "integrated_gradients")]


def main() -> None:
    from adaptlab.explain.runner import attribute, predicted_targets

    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    cases = {"image": image_case, "tokens": token_case, "series": series_case}
    cost_rows, overhead_rows = [], []
    for kind, build in cases.items():
        label, target, samples = build(args.samples, args.device)
        settings = {"n_steps": STEPS, "nsamples": 64}
        for method in METHODS[kind]:
            result = attribute(target, samples, method, settings=dict(settings))
            routed = "" if result.method == method else f" (ran {result.method})"
            cost_rows.append(f"| {kind} | {label} | {method}{routed} | "
                             f"{result.seconds / len(samples):.3f} | {result.plan.rows} |")
            print(cost_rows[-1], flush=True)
        for case_kind, method in OVERHEAD:
            if case_kind != kind:
                continue
            score = target.score_module()
            targets = predicted_targets(target, score, samples)
            rows = attribute(target, samples[:1], "saliency").plan.rows
            if kind == "series":
                settings["n_steps"] = STEPS
            wrapped, direct = [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                direct_call(kind, method, target, samples, targets, rows)
                direct.append(time.perf_counter() - start)
                start = time.perf_counter()
                attribute(target, samples, method, settings=dict(settings), targets=None)
                wrapped.append(time.perf_counter() - start)
            ratio = statistics.median(wrapped) / statistics.median(direct)
            overhead_rows.append(f"| {kind} | {method} | {statistics.median(direct):.2f} | "
                                 f"{statistics.median(wrapped):.2f} | {ratio:.3f} |")
            print(overhead_rows[-1], flush=True)
        target.close()
    body = "\n".join([
        f"## Attribution cost and wrapper overhead ({args.device})", "",
        f"{machine()}. {args.samples} samples per modality, IG with {STEPS} steps, SHAP "
        "GradientExplainer with 64 samples, checks off. Seconds per sample include the memory "
        "plan, the pre-flight and any routing. `python bench/explain_costs.py`", "",
        "| modality | model and data | method | s / sample | rows per pass |",
        "|---|---|---|---|---|", *cost_rows, "",
        "Overhead: the same attribution called directly (Captum / SHAP with the same model, "
        "samples, targets, steps and batch) against `adaptlab.explain`'s `attribute`; median of "
        f"{args.rounds} alternating rounds. Goal: at most 1.1x.", "",
        "| modality | method | direct s | adaptlab s | ratio |", "|---|---|---|---|---|",
        *overhead_rows])
    write_section(f"explain-{args.device}", body)


if __name__ == "__main__":
    main()
