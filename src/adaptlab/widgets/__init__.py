"""Notebook widgets (ipywidgets 8): the setup panel that builds a ``RunConfig``, the training
view that runs it (Train / Stop / Resume, live curves, costs, log), and the comparison view
(every run of the session, metric against cost, Explain).

Imported lazily: ``from adaptlab.widgets import setup_panel`` costs no torch import until a
view needs the engine.
"""

from __future__ import annotations


def setup_panel(domain: str | None = None, **initial):
    from adaptlab.widgets.setup_view import SetupPanel

    return SetupPanel(domain, **initial)


def training_view(panel):
    from adaptlab.widgets.train_view import TrainingView

    return TrainingView(panel)


def comparison_view(runs=None, root=None):
    from adaptlab.widgets.compare_view import ComparisonView

    return ComparisonView(runs=runs, root=root)
