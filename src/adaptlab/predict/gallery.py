"""A few predictions drawn beside what was predicted: the inputs as the domain's report
renderer draws them (photos, series, clouds, code), optionally with the attribution map of
the predicted output, through the explain machinery."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from adaptlab.errors import AdaptlabError

MAX_TEXT = 2000  # characters of an input's text drawn (a whole module would swamp the view)

if TYPE_CHECKING:
    from adaptlab.predict.writer import Predictions
    from adaptlab.run_loading import LoadedRun


def _caption(table, name: str) -> str:
    """What the table says of ``name``: its first row, the name column left out."""
    key = table.columns[0]
    rows = table[table[key].astype(str) == name]
    if rows.empty:
        return name
    row = rows.iloc[0]
    if "prediction" in table.columns:
        probabilities = [c for c in table.columns if c.startswith("probability_")]
        best = max((float(row[c]) for c in probabilities), default=None)
        shown = f"{row['prediction']}" + (f" (p={best:.2f})" if best is not None else "")
    else:
        shown = ", ".join(f"{c}={row[c]}" for c in table.columns[1:4])
    more = f" ({len(rows)} rows)" if len(rows) > 1 else ""
    return f"{name}: {shown}{more}"


def prediction_gallery(run: LoadedRun, predictions: Predictions, count: int = 6,
                       method: str | None = None) -> str:
    """HTML for the first ``count`` readable inputs, each titled with its prediction; with
    ``method`` (an attribution method name, or ``"default"``: the domain's), each beside its
    attribution map of the predicted output."""
    from adaptlab.data.splits import SplitDataset
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.explain.runner import attribute
    from adaptlab.explain.target import has_target, make_target, task_class
    from adaptlab.report.renderers import get_renderer

    inputs = predictions.inputs
    if inputs is None:
        raise AdaptlabError("these predictions do not hold their inputs; predict again")
    defaults = run.domain.explain_defaults
    refusal = task_class(run.data.task).explain_refusal
    notes = []
    if method == "default":
        method = defaults.get("method", "integrated_gradients")
        if refusal:  # asked for whatever applies: none does
            method, notes = None, [f"no attributions: {refusal}"]
    if method and refusal:
        raise AdaptlabError(f"attributions: {refusal}")
    skipped = {entry["file"] for entry in predictions.skipped}
    chosen = [i for i, name in enumerate(inputs.names) if name not in skipped][:count]
    if not chosen:
        return "<p><i>nothing to draw: no input was predicted</i></p>"
    if method is None and not has_target(inputs.modality):
        return _page(predictions, chosen, _text_cards(predictions, chosen), notes)
    target = make_target(inputs.modality, run.model, run.backbone, run.data.task,
                         run.data.class_names)
    target.layer_map = run.layer_map
    described = SplitDataset(run.data.class_names, {"predict": inputs.samples},
                             modality=inputs.modality, task=run.data.task,
                             coords=inputs.details.get("coords") or run.data.coords)
    dataset = make_torch_dataset(described, "predict", run.backbone, False,
                                 {"image_size": run.config.image_size})
    try:
        samples = [target.sample(dataset, i) for i in chosen]
        for sample in samples:
            if sample.label is not None and sample.label < 0:
                sample.label = None  # unknown: the predicted output is explained
        maps = attribute(target, samples, method,
                         settings=dict(defaults.get("settings", {}))).features if method else None
    finally:
        target.close()
    renderer = get_renderer(run.domain.explain_defaults.get("renderer", target.kind))
    table = predictions.table
    cards = []
    for position, (index, sample) in enumerate(zip(chosen, samples, strict=True)):
        drawn = [(method, maps[position])] if maps is not None else []
        cards.append("<div class='adaptlab-prediction'>"
                     + renderer.sample(sample, drawn, _caption(table, inputs.names[index]))
                     + "</div>")
    note = f" with {html.escape(method)} attributions of the predicted output" if method else ""
    return _page(predictions, chosen, cards, notes, note)


def _page(predictions: Predictions, chosen: list[int], cards: list[str], notes: list[str],
          note: str = "") -> str:
    notes_html = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in notes)
    return (f"<div class='adaptlab-predictions'><p>{len(chosen)} of {predictions.count} "
            f"predictions{note}</p>{notes_html}{''.join(cards)}</div>")


def _text_cards(predictions: Predictions, chosen: list[int]) -> list[str]:
    """Inputs that no renderer draws (a generation run's source code): each input's text
    under its row of the table."""
    inputs, table = predictions.inputs, predictions.table
    cards = []
    for index in chosen:
        source = inputs.samples[index][0]
        text = str(source[0] if isinstance(source, tuple) else source)
        cards.append("<div class='adaptlab-prediction'><p>"
                     + html.escape(_caption(table, inputs.names[index])) + "</p><pre>"
                     + html.escape(text[:MAX_TEXT]) + "</pre></div>")
    return cards
