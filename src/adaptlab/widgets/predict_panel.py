"""The comparison view's Predict panel: a run (the one picked), a file or folder of new inputs
(or, left empty, the run's own test split), and the table with the first inputs drawn beside
their predictions, optionally with attributions of the predicted output.

Prediction runs on a worker thread, as training and explaining do, so the notebook stays
responsive; the table and drawings are also written as a plain output saved in the notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets

from adaptlab.errors import AdaptlabError
from adaptlab.widgets.jobs import JobResultView

TABLE_ROWS = 20  # rows of the table shown; the file holds them all
NO_ATTRIBUTIONS = "(none)"


def table_html(table, rows: int = TABLE_ROWS) -> str:
    shown = table.head(rows).to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                     classes="adaptlab-predictions-table", border=0)
    more = f"<p><i>first {rows} of {len(table)} rows</i></p>" if len(table) > rows else ""
    return shown + more


class PredictPanel(widgets.VBox, JobResultView):
    """``choose_run()`` names the run to predict with (the comparison view's pick)."""

    def __init__(self, choose_run: Callable[[], Path]) -> None:
        from adaptlab.explain import method_names

        self._choose_run = choose_run
        self.predictions = None
        self.data = widgets.Text(description="data", layout=widgets.Layout(width="60%"),
                                 placeholder="a file or folder of new inputs; empty: the run's "
                                             "test split")
        self.method = widgets.Dropdown(options=[NO_ATTRIBUTIONS, *method_names()],
                                       description="attributions")
        self.count = widgets.BoundedIntText(value=4, min=1, max=32, description="drawn")
        self.button = widgets.Button(description="Predict", icon="play")
        self.message = widgets.HTML()
        self.output = widgets.HTML()
        self.button.on_click(lambda _: self.start())
        super().__init__([widgets.HTML("<b>Predict with a run</b>"),
                          widgets.HBox([self.data, self.button]),
                          widgets.HBox([self.method, self.count]), self.message, self.output])
        self.add_class("adaptlab-predict-panel")

    def start(self, data: str | Path | None = None, run: str | Path | None = None,
              count: int | None = None, method: str | None = None):
        """Predict on a worker thread; ``data`` None takes the panel's field (empty: the
        run's test split)."""
        if self._busy("a prediction"):
            return None
        try:
            run_dir = Path(run) if run is not None else self._choose_run()
        except AdaptlabError as exc:
            self._say(str(exc), error=True)
            return None
        data = data if data is not None else (self.data.value.strip() or None)
        count = count or self.count.value
        method = method or (None if self.method.value == NO_ATTRIBUTIONS else self.method.value)

        def work(emit):
            from adaptlab.predict.gallery import prediction_gallery
            from adaptlab.run_loading import load_run

            loaded = load_run(run_dir, with_data=data is None)
            predictions = loaded.predict(data, split=None if data else "test")
            return predictions, prediction_gallery(loaded, predictions, count, method)

        return self._launch(work, f"adaptlab-predict-{run_dir}", self.button,
                            f"predicting with {run_dir} on {data or 'its test split'}...")

    async def predict(self, data: str | Path | None = None, run: str | Path | None = None,
                      count: int | None = None, method: str | None = None):
        """Predict and wait; the table and drawings show here and are saved in this cell."""
        await self._await_job(self.start(data, run, count, method), "adaptlab-predictions",
                              "predicting...")
        return self.predictions

    def _events(self, events: list[dict]) -> None:
        self._job_finished(events, self.button, "predict", self._show)

    def _show(self, result) -> dict[str, str]:
        self.predictions, gallery = result
        line = f"{self.predictions.count} predictions: {self.predictions.table_path}"
        if self.predictions.skipped:
            line += f" ({len(self.predictions.skipped)} inputs skipped, listed beside it)"
        self._say(line)
        page = table_html(self.predictions.table) + gallery
        self.output.value = page
        return {"text/html": f"<div class='adaptlab-record'>{page}</div>", "text/plain": line}
