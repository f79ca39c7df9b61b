"""The report page: one HTML file with everything embedded (no scripts, no network)."""

from __future__ import annotations

import html
import platform
from typing import Any

import numpy as np

from adaptlab.report.attributions import method_facts
from adaptlab.report.renderers import figure_html, get_renderer

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d1d1f;background:#fff;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;
padding:.25rem .5rem;font-size:.85rem;text-align:left}caption{font-size:.85rem;text-align:left;
font-weight:600}.card{border:1px solid #e3e3e3;border-radius:6px;padding:.5rem;margin:.5rem 0}
.tok{padding:1px 2px;border-radius:2px;font-family:monospace;font-size:.8rem;line-height:1.8}
.tokens{margin:.3rem 0}.pass{color:#0a7d28;font-weight:600}.fail{color:#b00020;font-weight:600}
.note{background:#fff8e1;border-left:3px solid #f0b400;padding:.3rem .6rem;font-size:.85rem}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}.caption{font-size:.85rem;margin:.2rem 0}
code{font-size:.85rem}img{max-width:100%}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return _e(value)


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None,
           caption: str = "") -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_number(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}{head}{body}</table>"


def _run_section(explanation) -> str:
    run = explanation.run
    config = run.config
    identity = [(k, getattr(config, k)) for k in ("domain", "dataset", "data", "backbone",
                                                  "strategy", "epochs", "lr", "batch_size", "seed")
                if getattr(config, k, None) not in (None, "")]
    if config.strategy_options:
        identity.append(("strategy options", config.strategy_options))
    final = run.metrics.get("final", {}).get("test", {})
    baseline = run.metrics.get("baseline", {}).get("test", {})
    metric_rows = [(name, final[name], baseline.get(name, "")) for name in final
                   if isinstance(final[name], int | float)]
    costs = run.costs
    memory = costs.get("memory_bytes", {})
    cost_rows = [(k, costs[k]) for k in ("trainable_params", "total_params", "trainable_percent",
                                         "seconds_per_epoch", "samples_per_second", "device")
                 if k in costs]
    cost_rows += [(f"memory: {k}", f"{v / 2**20:.1f} MiB") for k, v in memory.items()
                  if isinstance(v, int | float)]
    return ("<h2>Run</h2><div class='grid'>"
            + _table(identity, ("setting", "value"), "configuration")
            + _table(metric_rows, ("test metric", "adapted", "baseline"),
                     f"metrics (baseline: {run.metrics.get('baseline_method', 'unadapted')})")
            + _table(cost_rows, ("cost", "value"), "costs") + "</div>")


def _method_section(explanation) -> str:
    facts = method_facts(explanation)
    rows = [("requested", facts["requested"]), ("used", f"{facts['used']} ({facts['library']})"),
            ("seconds per sample", facts["seconds_per_sample"]),
            ("memory plan", facts["memory_plan"]),
            ("features", explanation.target.feature_axes),
            ("samples", f"{len(explanation.samples)} from split {explanation.split!r}")]
    if "completeness_gap_mean" in facts:
        rows.append(("completeness gap (mean |sum - (f(x) - E f(background))|)",
                     facts["completeness_gap_mean"]))
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in facts["notes"])
    return f"<h2>Method</h2>{_table(rows)}{notes}"


def _title(explanation, i: int) -> str:
    sample = explanation.samples[i]
    target = explanation.result.targets[i]
    parts = [f"#{sample.index}"]
    if "name" in sample.display:
        parts.append(sample.display["name"])
    if sample.label is not None:
        parts.append(f"label {explanation.label_name(sample.label)}")
    parts.append(f"explained output: {explanation.label_name(target)}")
    return " | ".join(parts)


def _gallery(explanation, renderer) -> str:
    cards = []
    for i, sample in enumerate(explanation.samples):
        maps = [("adapted", explanation.result.features[i])]
        if explanation.unadapted_features is not None:
            maps.insert(0, (explanation.unadapted_label, explanation.unadapted_features[i]))
        cards.append(f"<div class='card'>{renderer.sample(sample, maps, _title(explanation, i))}"
                     "</div>")
    return "<h2>Attributions</h2>" + "".join(cards)


def _class_summaries(explanation, renderer) -> str:
    groups: dict[str, list[int]] = {}
    for i, target in enumerate(explanation.result.targets):
        groups.setdefault(explanation.label_name(target) or "all", []).append(i)
    parts = [renderer.class_summary(name, [explanation.samples[i] for i in idx],
                                    [explanation.result.features[i] for i in idx])
             for name, idx in groups.items()]
    return "<h2>Per explained output</h2><div class='grid'>" + "".join(parts) + "</div>"


def _curve_figure(curves: dict) -> str:
    from adaptlab.report.renderers import _pyplot

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(4, 2.4))
    for name, values in curves.items():
        axis.plot(np.linspace(0, 1, len(values)), values, label=name)
    axis.set_xlabel("fraction of features, most attributed first", fontsize=8)
    axis.set_ylabel("score", fontsize=8)
    axis.legend(fontsize=7)
    return figure_html(fig, "deletion and insertion curves")


def _checks_section(checks: dict) -> str:
    if not checks:
        return "<h2>Checks</h2><p>not run</p>"
    faith = checks["faithfulness"]
    rows = [("deletion AUC (lower is better)", faith["deletion_auc"], faith["random_deletion_auc"]),
            ("insertion AUC (higher is better)", faith["insertion_auc"],
             faith["random_insertion_auc"])]
    fid = checks["infidelity_sensitivity"]
    random = checks["randomisation"]
    verdict = "<span class='pass'>passed</span>" if random["passed"] else \
        "<span class='fail'>failed</span>"
    sens = fid["sensitivity_max"] if fid["sensitivity_max"] is not None else \
        fid.get("sensitivity_note", "")
    return ("<h2>Checks</h2><div class='grid'>"
            + _table(rows, ("faithfulness", "attribution order", "random order"))
            + _curve_figure(faith["curves"]) + "</div>"
            + _table([("infidelity (Captum, lower is better)", fid["infidelity"]),
                      ("max-sensitivity (Captum, lower is better)", sens),
                      ("samples", fid["samples"])])
            + f"<p>Model-parameter randomisation: mean rank correlation "
              f"{_correlation(random)} (threshold {random['threshold']}): {verdict}. "
              f"{_e(random['what'])}.</p>")


def _correlation(random: dict) -> str:
    mean = random["mean_rank_correlation"]
    text = "undefined" if mean is None else f"{mean:.3f}"
    constant = random.get("constant_maps")
    return f"{text} ({constant} constant map(s) of the trained model)" if constant else text


def _comparison_section(comparison: dict | None) -> str:
    if comparison is None:
        return ""
    rows = [(i, r, p) for i, (r, p) in enumerate(zip(comparison["per_sample_rank"],
                                                     comparison["per_sample_pearson"],
                                                     strict=True))]
    return ("<h2>What did adaptation change?</h2>"
            f"<p>Mean rank correlation {comparison['mean_rank_correlation']:.3f}, mean spatial "
            f"(Pearson) correlation {comparison['mean_pearson_correlation']:.3f}: "
            f"{_e(comparison['what'])}.</p>"
            + _table(rows, ("sample", "rank correlation", "Pearson")))


def _layer_change_section(run_dir) -> str:
    """Where the run was analysed (``adaptlab analyse``): what fine-tuning changed per block."""
    import base64

    from adaptlab.analysis.layer_change import ANALYSIS_DIR, PLOT_FILE, read_analysis

    analysis = read_analysis(run_dir)
    if analysis is None:
        return ""
    rows = [(row["block"], row["name"], row["cka"], row["rsa"]) for row in analysis["layers"]]
    plot = run_dir / ANALYSIS_DIR / PLOT_FILE
    image = (f"<img alt='similarity per block' src='data:image/png;base64,"
             f"{base64.b64encode(plot.read_bytes()).decode()}'>" if plot.is_file() else "")
    return ("<h2>Which blocks did fine-tuning change?</h2>"
            f"<p>Suggested k for <code>freeze</code>: <b>{analysis['suggested_k']}</b> of "
            f"{analysis['num_blocks']} blocks ({_e(analysis['rule'])}; {analysis['probe']} "
            f"{_e(analysis['split'])} examples).</p><div class='grid'>"
            + _table(rows, ("block", "name", "linear CKA", "RSA")) + image + "</div>")


def _environment(explanation) -> str:
    import captum
    import shap
    import torch

    env = dict(explanation.run.costs.get("environment", {}))
    env.update({"captum": captum.__version__, "shap": shap.__version__,
                "explained with torch": torch.__version__, "python (explain)":
                platform.python_version(), "explain device": explanation.result.plan.device})
    return "<h2>Environment</h2>" + _table(sorted(env.items()), ("component", "version"))


def report_html(explanation) -> str:
    renderer_name = explanation.run.domain.explain_defaults.get("renderer",
                                                                explanation.target.kind)
    renderer = get_renderer(renderer_name)
    run = explanation.run
    body = [f"<h1>adaptlab report: {_e(run.run_dir.name)}</h1>",
            f"<p>{_e(run.domain.title)}: {_e(run.config.dataset or run.config.data)}, "
            f"{_e(run.config.backbone)}, strategy {_e(run.config.strategy)}</p>",
            _run_section(explanation), _method_section(explanation),
            _gallery(explanation, renderer), _class_summaries(explanation, renderer),
            _checks_section(explanation.checks), _comparison_section(explanation.comparison),
            _layer_change_section(run.run_dir), _environment(explanation)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>adaptlab report: {_e(run.run_dir.name)}</title><style>{STYLE}</style></head>"
            "<body>" + "\n".join(body) + "</body></html>\n")
