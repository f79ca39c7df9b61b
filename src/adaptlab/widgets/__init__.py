"""Notebook widgets (ipywidgets 8): the setup panel that builds a ``RunConfig``.

The training view, comparison view and Explain button are the rest of the notebook issue.
"""

from __future__ import annotations


def setup_panel(**initial):
    from adaptlab.widgets.setup_panel import SetupPanel

    return SetupPanel(**initial)
