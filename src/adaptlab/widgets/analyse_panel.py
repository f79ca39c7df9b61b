"""The comparison view's Analyse panel: Telly's layer-change analysis of the picked run (CKA
and RSA per block against the model it started from) and the k it suggests for ``freeze``.

The analysis runs on a worker thread, as training and explaining do; its table and plot are
also written as a plain output saved in the notebook, and into the run folder, where the setup
panel finds the suggested k for the next run on the same backbone.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets

from adaptlab.errors import AdaptlabError
from adaptlab.widgets.jobs import JobResultView


def analysis_html(result, run_dir: Path) -> str:
    """The per-block table and the plot of an analysis written to ``run_dir``."""
    from adaptlab.analysis.layer_change import ANALYSIS_DIR, PLOT_FILE

    rows = "".join(f"<tr><td>{row['block']}</td><td>{row['name']}</td>"
                   f"<td>{row['cka']:.3f}</td><td>{row['rsa']:.3f}</td></tr>"
                   for row in result.layers)
    png = (run_dir / ANALYSIS_DIR / PLOT_FILE).read_bytes()
    return (f"<p>Suggested k for <code>freeze</code>: <b>{result.suggested_k}</b> of "
            f"{result.num_blocks} blocks ({result.rule})</p>"
            "<table class='adaptlab-analysis-table'><tr><th>block</th><th>name</th>"
            f"<th>linear CKA</th><th>RSA</th></tr>{rows}</table>"
            f"<img alt='similarity per block' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'>")


class AnalysePanel(widgets.VBox, JobResultView):
    """``choose_run()`` names the run to analyse (the comparison view's pick)."""

    def __init__(self, choose_run: Callable[[], Path]) -> None:
        from adaptlab.analysis.layer_change import DEFAULT_PROBE, DEFAULT_THRESHOLD

        self._choose_run = choose_run
        self._analysed: Path | None = None
        self.result = None
        self.threshold = widgets.BoundedFloatText(value=DEFAULT_THRESHOLD, min=0.01, max=1.0,
                                                  step=0.01, description="threshold")
        self.probe = widgets.BoundedIntText(value=DEFAULT_PROBE, min=3, max=4096,
                                            description="probe")
        self.button = widgets.Button(description="Analyse", icon="line-chart")
        self.message = widgets.HTML()
        self.output = widgets.HTML()
        self.button.on_click(lambda _: self.start())
        super().__init__([widgets.HTML("<b>What did fine-tuning change?</b>"),
                          widgets.HBox([self.threshold, self.probe, self.button]),
                          self.message, self.output])
        self.add_class("adaptlab-analyse-panel")

    def start(self, run: str | Path | None = None, threshold: float | None = None,
              probe: int | None = None):
        """Analyse on a worker thread (the picked run, else the latest finished)."""
        if self._busy("an analysis"):
            return None
        try:
            run_dir = Path(run) if run is not None else self._choose_run()
        except AdaptlabError as exc:
            self._say(str(exc), error=True)
            return None
        threshold = self.threshold.value if threshold is None else threshold
        probe = probe or self.probe.value

        def work(emit):
            from adaptlab.analysis import analyse

            return analyse(run_dir, probe, threshold)

        self._analysed = run_dir
        return self._launch(work, f"adaptlab-analyse-{run_dir}", self.button,
                            f"analysing {run_dir} ({probe} probe examples)...")

    async def analyse(self, run: str | Path | None = None, threshold: float | None = None,
                      probe: int | None = None):
        """Analyse and wait; the table and plot show here and are saved in this cell."""
        await self._await_job(self.start(run, threshold, probe), "adaptlab-analysis",
                              "analysing...")
        return self.result

    def _events(self, events: list[dict]) -> None:
        self._job_finished(events, self.button, "analyse", self._show)

    def _show(self, result) -> dict[str, str]:
        self.result = result
        line = (f"{self._analysed}: suggested k = {result.suggested_k} of "
                f"{result.num_blocks} blocks")
        self._say(line)
        page = analysis_html(result, self._analysed)
        self.output.value = page
        return {"text/html": f"<div class='adaptlab-record'>{page}</div>",
                "text/plain": result.text()}
