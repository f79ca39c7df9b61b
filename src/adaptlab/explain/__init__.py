"""Attributions for adapted models: ``explain(run, method, samples)``.

Methods come from Captum and SHAP behind one registry (``adaptlab.explain.methods``); a
pre-flight scan patches or routes what would break them; checks and the before/after
comparison go into the run's report (``adaptlab.report``).
"""

from __future__ import annotations

from typing import Any


def explain(run, method: str | None = None, samples=None, **options: Any):
    from adaptlab.explain.api import explain as _explain

    return _explain(run, method, samples, **options)


def method_names() -> list[str]:
    from adaptlab.explain.methods import method_names as _names

    return _names()
