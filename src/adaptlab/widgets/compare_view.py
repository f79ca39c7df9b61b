"""The comparison view: every run of the session (or of a folder) in one table, the target
metric against trainable parameters and memory, run selection, and the Explain button.

>>> compare = comparison_view(); compare.show()      # doctest: +SKIP
>>> await compare.explain(samples=4)                 # doctest: +SKIP
>>> await compare.predict("new_photos/")              # doctest: +SKIP
"""

from __future__ import annotations

import weakref
from pathlib import Path

import ipywidgets as widgets

from adaptlab.compare import figure_png, find_runs, runs_table, summarise_run, tradeoff_figure
from adaptlab.errors import AdaptlabError
from adaptlab.summary import text_table
from adaptlab.widgets.jobs import JobResultView
from adaptlab.widgets.record import SavedOutput, html_table, png_img

DEFAULT_METHOD = "(domain default)"

_SESSION_RUNS: list[Path] = []
_VIEWS: weakref.WeakSet = weakref.WeakSet()


def register_run(run_dir: Path | None) -> None:
    """A training view ended a run (finished or stopped): list it, refresh open views."""
    if run_dir is None:
        return
    run_dir = Path(run_dir)
    if run_dir not in _SESSION_RUNS:
        _SESSION_RUNS.append(run_dir)
    for view in list(_VIEWS):
        view.refresh()


def session_runs() -> list[Path]:
    """Run folders the training views of this kernel have produced, oldest first."""
    return [p for p in _SESSION_RUNS if (p / "config.json").is_file()]


def report_iframe(page: str, height: int = 640) -> str:
    """A self-contained report page inline (the report has no scripts and no network)."""
    import html

    return (f'<iframe class="adaptlab-report" srcdoc="{html.escape(page)}" '
            f'style="width:100%;height:{height}px;border:0"></iframe>')


class ComparisonView(widgets.VBox, JobResultView):
    """``runs``: run folders to show; ``root``: a folder whose runs to show; neither: the
    runs of this session, updated as training views finish."""

    def __init__(self, runs: list | None = None, root: str | Path | None = None) -> None:
        self._fixed = [Path(r) for r in runs] if runs is not None else None
        self._root = Path(root) if root is not None else None
        self.summaries = []
        self.explanation = None
        self.report_page: str | None = None
        self._explained: Path | None = None
        self.message_text = ""
        self.table = widgets.HTML()
        self.picker = widgets.SelectMultiple(description="runs", rows=4,
                                             layout=widgets.Layout(width="70%"))
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.plot.add_class("adaptlab-tradeoff")
        from adaptlab.explain import method_names

        self.method = widgets.Dropdown(options=[DEFAULT_METHOD, *method_names()],
                                       description="method")
        self.samples = widgets.BoundedIntText(value=4, min=1, max=64, description="samples")
        self.checks = widgets.Checkbox(value=True, description="checks", indent=False)
        self.explain_button = widgets.Button(description="Explain", icon="search")
        self.message = widgets.HTML()
        self.report = widgets.HTML()
        self.picker.observe(lambda _: self._draw(), names="value")
        self.explain_button.on_click(lambda _: self.start_explain())
        from adaptlab.widgets.analyse_panel import AnalysePanel
        from adaptlab.widgets.predict_panel import PredictPanel
        from adaptlab.widgets.soup_panel import SoupPanel

        self.predict_panel = PredictPanel(lambda: self._explain_target(None, "predict"))
        self.analyse_panel = AnalysePanel(lambda: self._explain_target(None, "analyse"))
        self.soup_panel = SoupPanel(self._picked_finished, self._add_run)
        super().__init__([self.table, self.picker, self.plot,
                          widgets.HBox([self.method, self.samples, self.checks,
                                        self.explain_button]),
                          self.message, self.report, self.predict_panel,
                          self.analyse_panel, self.soup_panel])
        self.add_class("adaptlab-comparison-view")
        _VIEWS.add(self)
        self.refresh()

    # -- the runs -----------------------------------------------------------------------------
    def run_dirs(self) -> list[Path]:
        if self._fixed is not None:
            return self._fixed
        if self._root is not None:
            return find_runs(self._root) if self._root.is_dir() else []
        return session_runs()

    def refresh(self) -> None:
        """Re-read the run folders (a run that finished since shows its metrics)."""
        self.summaries = []
        for run_dir in self.run_dirs():
            try:
                self.summaries.append(summarise_run(run_dir))
            except AdaptlabError as exc:
                self._say(str(exc), error=True)
        chosen = set(self.picker.value)
        options = [(s.label, s.run_dir) for s in self.summaries]
        self.picker.options = options
        self.picker.value = tuple(v for _, v in options if v in chosen)
        self._draw()

    def _picked_finished(self) -> list[Path]:
        finished = {Path(s.run_dir) for s in self.summaries if s.status == "finished"}
        return [p for p in map(Path, self.picker.value) if p in finished]

    def _add_run(self, run_dir: Path) -> None:
        """A run made here (a soup) joins the view: fixed lists grow, the others find it."""
        if self._fixed is not None:
            self._fixed.append(run_dir)
        elif self._root is None:
            register_run(run_dir)
            return
        self.refresh()

    async def make_soup(self, runs: list | None = None, greedy: bool = True,
                        out: str | Path | None = None) -> Path:
        """Average runs (the picked ones) into a new run folder, uniform or greedy
        (:func:`adaptlab.soups.make_soup`); the soup then joins the view."""
        return await self.soup_panel.make(runs, greedy, out)

    def selected_runs(self) -> list[Path]:
        """The picked runs, or every run when none is picked."""
        return [Path(v) for v in self.picker.value] or [Path(s.run_dir) for s in self.summaries]

    def _shown(self):
        picked = set(self.picker.value)
        return [s for s in self.summaries if not picked or s.run_dir in picked]

    def _draw(self) -> None:
        shown = self._shown()
        self.table.value = html_table(runs_table(shown)) if shown else \
            "<i>no runs yet: train one above</i>"
        self.plot.value = figure_png(tradeoff_figure(shown))

    def record_bundle(self) -> dict[str, str]:
        shown = self._shown()
        rows = runs_table(shown)
        page = (html_table(rows) + png_img(self.plot.value, "metric against cost")) if shown \
            else "no runs"
        text = text_table(rows) if shown else "no runs"
        return {"text/html": f"<div class='adaptlab-record'>{page}</div>", "text/plain": text}

    def show(self) -> None:
        """Display the view and, below it, the table and plot as a saved output."""
        from IPython.display import display

        display(self)
        SavedOutput("adaptlab-compare").show(self.record_bundle())

    # -- explain --------------------------------------------------------------------------------
    def _explain_target(self, run: str | Path | None, what: str = "explain") -> Path:
        if run is not None:
            return Path(run)
        finished = [Path(s.run_dir) for s in self.summaries if s.status == "finished"]
        picked = [p for p in map(Path, self.picker.value) if p in finished]
        if not (picked or finished):
            raise AdaptlabError(f"{what.capitalize()}: no finished run yet")
        return (picked or finished)[-1]

    def start_explain(self, run: str | Path | None = None, method: str | None = None,
                      samples: int | None = None, checks: bool | None = None):
        """Explain a run on a worker thread (the picked one, else the latest finished)."""
        if self._busy("an explanation"):
            return None
        try:
            run_dir = self._explain_target(run)
        except AdaptlabError as exc:
            self._say(str(exc), error=True)
            return None
        method = method or (None if self.method.value == DEFAULT_METHOD else self.method.value)
        samples = samples or self.samples.value
        checks = self.checks.value if checks is None else checks

        def work(emit):
            from adaptlab.explain import explain

            return explain(run_dir, method, samples, checks=checks, report=True)

        self._explained = run_dir
        return self._launch(work, f"adaptlab-explain-{run_dir}", self.explain_button,
                            f"explaining {run_dir} ({samples} samples"
                            f"{', with checks' if checks else ''})...")

    async def explain(self, run: str | Path | None = None, method: str | None = None,
                      samples: int | None = None, checks: bool | None = None):
        """Explain and wait; the report shows in the view and is saved in this cell."""
        started = self.start_explain(run, method, samples, checks)
        await self._await_job(started, "adaptlab-report", f"explaining {self._explained}...")
        return self.explanation

    async def predict(self, data: str | Path | None = None, run: str | Path | None = None,
                      count: int = 4, method: str | None = None):
        """Apply a run (the picked one, else the latest finished) to ``data`` (a file or
        folder; None: the run's test split): the table, and the first ``count`` inputs drawn
        beside their predictions, with ``method``'s attributions when named (``"default"``:
        the domain's method)."""
        return await self.predict_panel.predict(data, run, count, method)

    async def analyse(self, run: str | Path | None = None, threshold: float | None = None,
                      probe: int | None = None):
        """Telly's layer-change analysis of a run (the picked one, else the latest
        finished): per-block similarity to the starting model and a suggested k."""
        return await self.analyse_panel.analyse(run, threshold, probe)

    def _events(self, events: list[dict]) -> None:
        self._job_finished(events, self.explain_button, "explain", self._show_explanation)

    def _show_explanation(self, result) -> dict[str, str]:
        self.explanation = result
        page_path = self._explained / "report" / "index.html"
        self.report_page = page_path.read_text()
        line = (f"report: {page_path} | method: {result.result.method} | "
                f"{len(result.samples)} samples")
        self._say(line)
        self.report.value = report_iframe(self.report_page)
        return {"text/html": report_iframe(self.report_page), "text/plain": line}


def comparison_view(runs: list | None = None, root: str | Path | None = None) -> ComparisonView:
    return ComparisonView(runs=runs, root=root)
