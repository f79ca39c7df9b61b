"""The comparison view's Make soup panel: the picked runs averaged into a new run folder
(uniform or greedy, :mod:`adaptlab.soups`), which then joins the view's runs.

The soup is made on a worker thread, as training and explaining are; its line (the folder,
the runs kept and the validation score) is also written as a plain output saved in the
notebook.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets

from adaptlab.errors import AdaptlabError
from adaptlab.widgets.jobs import JobResultView


def free_soup_folder(runs: list[Path]) -> Path:
    """``soup``, ``soup-2``, ... beside the first picked run."""
    parent = runs[0].parent
    for number in range(1, 1000):
        candidate = parent / ("soup" if number == 1 else f"soup-{number}")
        if not candidate.exists():
            return candidate
    raise AdaptlabError(f"{parent}: no free soup folder name up to soup-999")


class SoupPanel(widgets.VBox, JobResultView):
    """``picked()`` names the runs to average (the comparison view's pick); ``made(path)``
    is told of each finished soup."""

    def __init__(self, picked: Callable[[], list[Path]], made: Callable[[Path], None]) -> None:
        self._picked, self._made = picked, made
        self.soup_dir: Path | None = None
        self.greedy = widgets.Checkbox(value=True, description="greedy", indent=False)
        self.out = widgets.Text(description="out", placeholder="default: soup beside the runs")
        self.button = widgets.Button(description="Make soup", icon="flask")
        self.message = widgets.HTML()
        self.button.on_click(lambda _: self.start())
        super().__init__([widgets.HTML("<b>Average the picked runs</b>"),
                          widgets.HBox([self.greedy, self.out, self.button]), self.message])
        self.add_class("adaptlab-soup-panel")

    def start(self, runs: list | None = None, greedy: bool | None = None,
              out: str | Path | None = None):
        """Make the soup on a worker thread."""
        if self._busy("a soup"):
            return None
        runs = [Path(r) for r in runs] if runs is not None else self._picked()
        if len(runs) < 2:
            self._say("Make soup: pick at least two finished runs", error=True)
            return None
        greedy = self.greedy.value if greedy is None else greedy
        try:
            target = Path(out or self.out.value.strip() or free_soup_folder(runs))
        except AdaptlabError as exc:
            self._say(str(exc), error=True)
            return None

        def work(emit):
            from adaptlab.soups import make_soup

            return make_soup(runs, target, greedy=greedy)

        return self._launch(work, f"adaptlab-soup-{target}", self.button,
                            f"making a {'greedy' if greedy else 'uniform'} soup of "
                            f"{len(runs)} runs in {target}...")

    async def make(self, runs: list | None = None, greedy: bool | None = None,
                   out: str | Path | None = None) -> Path:
        """Make the soup and wait; its line is saved in this cell."""
        await self._await_job(self.start(runs, greedy, out), "adaptlab-soup",
                              "making a soup...")
        return self.soup_dir

    def _events(self, events: list[dict]) -> None:
        self._job_finished(events, self.button, "soup", self._show)

    def _show(self, soup_dir) -> dict[str, str]:
        self.soup_dir = Path(soup_dir)
        recipe = json.loads((self.soup_dir / "soup.json").read_text())
        line = (f"soup: {self.soup_dir} ({recipe['method']}, {len(recipe['kept'])} of "
                f"{len(recipe['ingredients'])} runs kept, validation {recipe['val']:.4f})")
        self._say(line)
        self._made(self.soup_dir)
        return {"text/plain": line}
