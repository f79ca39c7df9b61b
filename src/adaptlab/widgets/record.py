"""The saved record: a plain display output (HTML with embedded PNGs, and text) that a view
rewrites by display id while a cell waits on it.

Live widgets are not saved with a notebook unless the front end saves widget state, and a
headless run (nbclient, papermill) has no widget front end at all; the record is an ordinary
output, so the notebook file shows the curves, metrics and costs on reopen, in VS Code, on
GitHub and in a papermill output. JupyterLab applies display updates only while the cell
that made the output runs, so a view writes its record from cells (``await view.train()``),
not from button clicks.
"""

from __future__ import annotations

import base64
import html
import uuid
from typing import Any

from adaptlab.summary import comparison_rows, cost_rows, text_table


def esc(value: Any) -> str:
    return html.escape(str(value))


def message_html(text: str, error: bool = False) -> str:
    """One status line for a view; errors in the theme's error colour."""
    style = " style='color:var(--jp-error-color1,#b00020)'" if error else ""
    return f"<span{style}>{esc(text)}</span>"


def png_img(png: bytes, alt: str, css_class: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{esc(alt)}" style="max-width:100%" src="data:image/png;base64,{data}">'


def html_table(rows: list[list[str]] | list[tuple[str, str]], header: bool = True) -> str:
    cell = "padding:2px 8px;border-bottom:1px solid var(--jp-border-color2,#ddd);text-align:left"
    out = []
    for i, row in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag} style='{cell}'>{esc(c)}</{tag}>" for c in row) +
                   "</tr>")
    return f"<table style='border-collapse:collapse;font-size:12px'>{''.join(out)}</table>"


def memory_rows(costs: dict[str, Any]) -> list[tuple[str, str]]:
    """Cost rows for a run that may still be training (no throughput yet)."""
    if not costs:
        return []
    filled = {"seconds_per_epoch": 0.0, "samples_per_second": 0.0, **costs}
    return [row for row in cost_rows(filled)
            if costs.get("seconds_per_epoch") or not row[0].startswith(("seconds", "samples"))]


def run_record(title: str, position: str, curves_png: bytes | None, result=None,
               costs: dict | None = None, error: str | None = None) -> dict[str, str]:
    """The record's mime bundle: text/html and text/plain."""
    parts = [f"<h4 style='margin:4px 0'>{esc(title)}</h4><div>{esc(position)}</div>"]
    text = [f"{title}: {position}"]
    if error:
        parts.append(f"<pre style='color:var(--jp-error-color1,#b00020)'>{esc(error)}</pre>")
        text.append(f"error: {error}")
    if curves_png:
        parts.append(png_img(curves_png, "training curves", "adaptlab-record-curves"))
    if result is not None and result.metrics:
        parts.append(f"<div><b>{esc(result.headline)}</b></div>")
        parts.append(html_table(comparison_rows(result.metrics)))
        text.append(result.headline)
        text.append(text_table(comparison_rows(result.metrics)))
    rows = memory_rows(result.costs if result is not None else costs or {})
    if rows:
        parts.append(html_table([("cost", "value"), *rows]))
        text.append(text_table(rows))
    return {"text/html": "<div class='adaptlab-record'>" + "".join(parts) + "</div>",
            "text/plain": "\n".join(text)}


class SavedOutput:
    """One display output, shown once in the running cell and rewritten in place."""

    def __init__(self, prefix: str) -> None:
        self.display_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self._shown = False

    def show(self, bundle: dict[str, str]) -> None:
        from IPython.display import display

        display(bundle, raw=True, display_id=self.display_id)
        self._shown = True

    def update(self, bundle: dict[str, str]) -> None:
        from IPython.display import update_display

        if not self._shown:
            self.show(bundle)
        else:
            update_display(bundle, raw=True, display_id=self.display_id)
