"""The model card's sections, in the Hugging Face model-card order, each from
:class:`~adaptlab.model_card.inputs.CardInputs` to a list of markdown lines."""

from __future__ import annotations

import math
import shlex
from typing import Any

from adaptlab.model_card.command import command_line
from adaptlab.model_card.inputs import EXPLANATION_FILE, CardInputs
from adaptlab.model_card.licences import licence_lines
from adaptlab.plugins.spec import BackboneSpec

SMALL_TEST_SPLIT = 100  # below this many test samples a metric moves a lot with one sample
WILSON_Z = 1.959963984540054  # the normal quantile of a two-sided 95 % interval

WEIGHT_ORIGINS = {
    "offline-package": "pre-trained weights shipped in an installed Python package (no download)",
    "timm-hub": "timm's pre-trained weights, downloaded from the Hugging Face Hub",
    "hf-hub": "pre-trained weights downloaded from the Hugging Face Hub",
    "local-file": "built into adaptlab, no pre-trained download: trained from a random start, "
                  "from a source run (`init_from`) or from a local weights file",
}


def metric(value: float | None) -> str:
    """Every metric is printed this way, so a reader can find metrics.json's value."""
    return "-" if value is None else f"{value:.4f}"


def check_value(value: float | None) -> str:
    """Check results span orders of magnitude (an infidelity of 1e-5): significant digits."""
    return "-" if value is None else f"{value:.4g}"


def _samples(n: Any) -> str:
    return f"{n} sample" if n == 1 else f"{n} samples"


def hub_id(backbone: BackboneSpec) -> str | None:
    """The backbone's Hugging Face Hub id, where its weights come from the Hub."""
    if backbone.weights == "hf-hub":
        return backbone.options.get("model_id")
    if backbone.weights == "timm-hub" and backbone.options.get("model_name"):
        return f"timm/{backbone.options['model_name']}"  # timm's weights live under timm/
    return None


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson's score interval for a proportion: unlike the normal approximation it stays
    inside [0, 1] and holds up for the few dozen samples a demo's test split has."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def model_details(card: CardInputs) -> list[str]:
    b, d = card.backbone, card.domain
    origin = WEIGHT_ORIGINS.get(b.weights, b.weights)
    if hub_id(b):
        origin += f" (`{hub_id(b)}`)"
    lines = ["## Model details", "",
             f"- **Backbone:** `{b.name}`: {b.description}",
             f"- **Pre-trained weights:** {origin}"]
    if card.config.backbone_weights:
        lines.append(f"- **Weights file:** `{card.config.backbone_weights}` replaced those "
                     "weights before adaptation")
    total = card.costs.get("total_params")
    lines.append(f"- **Parameters:** {b.params_millions:g} M in the backbone"
                 + (f"; {total:,} in the adapted model with its head" if total else ""))
    if card.config.init_from:
        lines.append(f"- **Started from:** the trained weights of run `{card.config.init_from}` "
                     "(transfer from a source run; see its own model card)")
    lines += [f"- **Domain:** {d.title} (`{d.name}`): {d.description}",
              f"- **Task:** {_task_text(card)}",
              f"- **Developed with:** adaptlab {_version()}", ""]
    return lines


def _task_text(card: CardInputs) -> str:
    task = card.metrics.get("task", "")
    names = card.metrics.get("class_names") or []
    if task in ("classification", "segmentation") and names:
        return f"{task}, {len(names)} classes: {', '.join(names)}"
    return task


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adaptlab")
    except PackageNotFoundError:
        return "(version unknown)"


def _options(card: CardInputs) -> str:
    """The strategy's every option, defaults included (what the run actually used: the card
    reads the config resolved)."""
    values = card.config.strategy_options
    return ", ".join(f"`{k}={v}`" for k, v in sorted(values.items())) or "none"


def _size(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 1024:.1f} KiB"


def adaptation(card: CardInputs) -> list[str]:
    c, costs = card.config, card.costs
    lines = ["## Adaptation", "", f"- **Strategy:** `{c.strategy}`; options: {_options(card)}"]
    if costs.get("trainable_params") is not None and costs.get("total_params"):
        lines.append(f"- **Trainable parameters:** {costs['trainable_params']:,} of "
                     f"{costs['total_params']:,} ({costs.get('trainable_percent') or 0:.2f} %)")
    epochs = card.metrics.get("epochs_run", c.epochs)
    lines.append(f"- **Training:** {epochs} epoch(s), {costs.get('optimizer_steps', '-')} optimizer "
                 f"steps, batch {c.batch_size} (x{c.grad_accum} accumulation), learning rate "
                 f"{c.lr:g} ({c.schedule}, warm-up {c.warmup_ratio:g}), weight decay "
                 f"{c.weight_decay:g}, seed {c.seed}")
    per_epoch = costs.get("seconds_per_epoch")
    if per_epoch is not None:
        lines.append(f"- **Time:** {per_epoch:.1f} s per epoch (about {per_epoch * epochs:.1f} s of "
                     f"training), {costs.get('samples_per_second') or 0:.1f} samples/s on "
                     f"{costs.get('device', '?')}")
    memory = costs.get("memory_bytes") or {}
    if memory:
        parts = ", ".join(f"{k} {_size(memory.get(k))}" for k in
                          ("parameters", "gradients", "optimizer", "activations"))
        peak = f"; peak CUDA {_size(memory['peak_cuda'])}" if memory.get("peak_cuda") else ""
        if costs.get("peak_total_bytes") is not None:
            peak = f"; at most {_size(costs['peak_total_bytes'])} together in one step" + peak
        lines.append(f"- **Training memory:** {parts}{peak}")
    if costs.get("weights_file"):
        lines.append(f"- **Saved weights:** `{costs['weights_file']}` "
                     f"({_size(costs.get('weights_bytes'))}); reloaded outputs differ "
                     f"by at most {costs.get('reload_max_abs_diff', '-')}")
    return [*lines, ""]


def training_data(card: CardInputs) -> list[str]:
    c, m = card.config, card.metrics
    lines = ["## Training data", ""]
    if card.dataset is None:
        lines += [f"- **Data:** your own, `--data {c.data}`",
                  "- **Licence: unknown.** adaptlab cannot know the terms of your own data: state "
                  "its licence and where it came from here before sharing this model."]
    else:
        lines += [f"- **Dataset:** `{card.dataset.name}`, shipped with the `{card.domain.name}` "
                  f"plugin: {card.dataset.description}", *licence_lines(card.dataset)]
    sizes = m.get("split_sizes") or {}
    if sizes:
        lines.append("- **Splits:** " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                     + " samples" + (f" (training subset: {c.train_samples})"
                                     if c.train_samples else ""))
    skipped = (m.get("skipped_inputs") or {}).get("count", 0)
    lines.append(f"- **Skipped inputs:** {skipped}"
                 + (" (unreadable; listed in `metrics.json`)" if skipped else ""))
    lines += [f"- **Loader note:** {note}" for note in m.get("data_notes") or []]
    source = card.source_dataset
    if source is not None:
        lines += [f"- **Source domain:** the baseline's class prototypes come from `{source.name}`: "
                  f"{source.description}", *licence_lines(source, "source dataset")]
    return [*lines, ""]


def evaluation(card: CardInputs) -> list[str]:
    m = card.metrics
    final, base = card.test_metrics("final"), card.test_metrics("baseline")
    references = {name: {k: v for k, v in split.get("test", {}).items() if isinstance(v, float)}
                  for name, split in (m.get("reference") or {}).items()}
    monitor, higher = m.get("monitor", ""), m.get("higher_is_better", True)
    size = (m.get("split_sizes") or {}).get("test", "?")
    lines = ["## Evaluation", "",
             f"Held-out test split ({size} samples): the adapted model against the unadapted "
             f"baseline, {m.get('baseline_method', 'the pre-trained model')}.", "",
             "| metric | adapted | unadapted baseline | change |"
             + "".join(f" `{name}` |" for name in references),
             "|---|---|---|---|" + "---|" * len(references)]
    for name, value in final.items():
        label = f"**{name}** (monitored, {'higher' if higher else 'lower'} is better)" \
            if name == monitor else name
        change = f"{value - base[name]:+.4f}" if name in base else "-"
        lines.append(f"| {label} | {metric(value)} | {metric(base.get(name))} | {change} |"
                     + "".join(f" {metric(r.get(name))} |" for r in references.values()))
    described = {name: _baseline_text(name) for name in references if _baseline_text(name)}
    if described:
        lines += ["", "Other baselines: " + "; ".join(
            f"`{name}`: {text}" for name, text in described.items()) + "."]
    stopped = "yes" if m.get("stopped_early") else "no"
    lines += ["", f"- **Best epoch:** {m.get('best_epoch', '-')} of {m.get('epochs_run', '-')} "
                  f"(by validation {monitor}); stopped early: {stopped} (patience "
                  f"{card.config.early_stopping_patience}, 0 = off)",
              "- Every split's metrics, per-class scores and the training history: "
              "`metrics.json`", ""]
    return lines


def _baseline_text(name: str) -> str | None:
    from adaptlab.session import BASELINE_METHODS

    return BASELINE_METHODS.get(name)


def _check_rows(checks: dict[str, Any]) -> list[str]:
    rows = []
    faith = checks.get("faithfulness") or {}
    for curve, better in (("deletion", "lower"), ("insertion", "higher")):
        if f"{curve}_auc" in faith:
            rows.append(f"| {curve} AUC, attribution order | {check_value(faith[f'{curve}_auc'])} "
                        f"| {better} is better; random order: "
                        f"{check_value(faith.get(f'random_{curve}_auc'))} |")
    infid = checks.get("infidelity_sensitivity") or {}
    if "infidelity" in infid:
        rows.append(f"| infidelity | {check_value(infid['infidelity'])} | lower is better (on "
                    f"the first {_samples(infid.get('samples', '?'))}) |")
        reading = "lower is better" if infid.get("sensitivity_max") is not None \
            else infid.get("sensitivity_note", "not measured")
        rows.append(f"| max-sensitivity | {check_value(infid.get('sensitivity_max'))} | {reading} |")
    random = checks.get("randomisation") or {}
    if "mean_rank_correlation" in random:
        verdict = "passed" if random.get("passed") else "**FAILED**"
        rows.append(f"| randomisation: rank correlation with a shuffled model | "
                    f"{check_value(random['mean_rank_correlation'])} | {verdict} (below "
                    f"{random.get('threshold', '?')} passes: the maps depend on the weights) |")
    return rows


def explanations(card: CardInputs) -> list[str]:
    lines = ["## Explanations", ""]
    report = card.explanation
    if report is None:
        return [*lines, f"Not explained yet: `adaptlab explain {shlex.quote(card.config.out)}` "
                        "adds attributions, their checks and this section.", ""]
    method = report.get("method") or {}
    lines.append(f"Explained with `{method.get('used')}` (requested `{method.get('requested')}`, "
                 f"{method.get('library')}) on {_samples(len(report.get('samples') or []))} of the "
                 f"{report.get('split')} split; the report: "
                 f"[{EXPLANATION_FILE.parent}/index.html]({EXPLANATION_FILE.parent}/index.html), "
                 f"the numbers: `{EXPLANATION_FILE.as_posix()}`.")
    lines += [f"- {note}" for note in method.get("notes") or []]
    rows = _check_rows(report.get("checks") or {})
    comparison = report.get("comparison") or {}
    if "mean_rank_correlation" in comparison:
        rows.append(f"| unadapted vs adapted maps: rank correlation | "
                    f"{check_value(comparison['mean_rank_correlation'])} | 1 = adaptation left the "
                    "explanation unchanged |")
    if rows:
        lines += ["", "| check | value | reading |", "|---|---|---|", *rows]
    if not report.get("checks"):
        lines += ["", "The attribution checks were not run (`--no-checks`)."]
    return [*lines, ""]


def limitations(card: CardInputs) -> list[str]:
    m, domain = card.metrics, card.domain
    data = f"`{card.dataset.name}`" if card.dataset else "your data"
    lines = ["## Intended use and limitations", "",
             f"- **Intended use:** {m.get('task', 'the task')} on data like {data} "
             f"({domain.title}); a research and teaching result, compared with the unadapted model. It is "
             "not validated for clinical, safety-critical or other high-stakes decisions."]
    size = (m.get("split_sizes") or {}).get("test")
    if isinstance(size, int) and size < SMALL_TEST_SPLIT:
        text = (f"- **Small test split:** {size} samples, so every test metric has wide "
                "uncertainty: a few samples more or less right move it visibly")
        accuracy = card.test_metrics().get("accuracy")
        if accuracy is not None and size > 0:
            low, high = wilson_interval(round(accuracy * size), size)
            text += f" (accuracy {metric(accuracy)}, 95 % Wilson interval {low:.4f}-{high:.4f})"
        lines.append(text + ".")
    lines.append(_baseline_line(card))
    lines.append("- **Data drift:** the metrics hold for data like the test split. Inputs from "
                 "other sources (instruments, sites, periods, populations), or unlike anything "
                 "in training, can score worse without warning: evaluate on a sample of the data "
                 "the model will meet.")
    skipped = (m.get("skipped_inputs") or {}).get("count", 0)
    if skipped:
        lines.append(f"- **Unreadable inputs:** {skipped} were skipped; inputs like them are "
                     "outside what was evaluated.")
    return [*lines, ""]


def _baseline_line(card: CardInputs) -> str:
    m = card.metrics
    monitor, higher = m.get("monitor", ""), m.get("higher_is_better", True)
    adapted, base = card.test_metrics().get(monitor), card.test_metrics("baseline").get(monitor)
    if adapted is None or base is None:
        return "- **Unadapted baseline:** not measured for this task."
    better = adapted > base if higher else adapted < base
    verdict = "adaptation improved on it" if better else \
        "adaptation did **not** improve on it: prefer the baseline, or train longer or on more data"
    return (f"- **Unadapted baseline** ({m.get('baseline_method', 'the pre-trained model')}): "
            f"{monitor} {metric(base)}, adapted {metric(adapted)}; {verdict}.")


def reproduce(card: CardInputs) -> list[str]:
    env = card.costs.get("environment") or {}
    software = ", ".join(f"{k} {v}" for k, v in env.items() if v and k != "platform")
    lines = ["## How to reproduce", "", "```bash", command_line(card.config), "```", "",
             "`config.json` in this folder holds every setting; the command rebuilds it with "
             f"adaptlab {_version()} and the same plugins (`--out` must name a new folder). In "
             "Python, `adaptlab.config.RunConfig.from_file` reads it back.",
             "The seed is fixed; GPU kernels can still make results differ slightly between "
             "machines."]
    if software:
        lines.append(f"Trained with {software}" + (f" on {env['platform']}" if env.get("platform")
                                                     else "") + ".")
    return [*lines, ""]
