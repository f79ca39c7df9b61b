"""Write an explanation into its run folder, atomically."""

from __future__ import annotations

import json
from pathlib import Path

from adaptlab.engine.atomic import atomic_write_text
from adaptlab.report.attributions import attributions_json
from adaptlab.report.html import report_html


def write_report(explanation, out_dir: str | Path | None = None) -> Path:
    """``report/index.html`` and ``report/attributions.json``; returns the HTML path.

    A report in the run's own ``report/`` folder also rewrites the run's ``MODEL_CARD.md``."""
    out = Path(out_dir) if out_dir else explanation.run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "attributions.json",
                      json.dumps(attributions_json(explanation), indent=1) + "\n")
    page = out / "index.html"
    atomic_write_text(page, report_html(explanation))
    run_dir = explanation.run.run_dir
    if out.resolve() == (run_dir / "report").resolve():
        from adaptlab.model_card import try_write_model_card

        try_write_model_card(run_dir)  # the card gains the checks' results
    return page
