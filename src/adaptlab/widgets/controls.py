"""Widget controls generated from a config dataclass's schema (``adaptlab.schema.describe``),
so every registered strategy gets its controls without hand-written UI.

Numbers are typed as text, not clamped by bounded widgets: a bad value must reach the
schema's check and come back as a message naming the field, not be silently corrected.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

LAYOUT = widgets.Layout(width="320px")
STYLE = {"description_width": "130px"}


def control_for(entry: dict[str, Any], value: Any = None) -> widgets.Widget:
    value = entry.get("default") if value is None else value
    common = {"description": entry["name"], "style": STYLE, "layout": LAYOUT,
              "tooltip": entry.get("help", "")}
    if entry["type"] == "bool":
        return widgets.Checkbox(value=bool(value), indent=False, **common)
    if "choices" in entry:
        return widgets.Dropdown(options=list(entry["choices"]), value=value, **common)
    text = "" if value is None else (",".join(value) if isinstance(value, list) else str(value))
    placeholder = "unset" if entry.get("optional") else ""
    return widgets.Text(value=text, placeholder=placeholder, **common)


def raw_value(control: widgets.Widget) -> Any:
    """What the control holds, as the schema's coercion expects it (empty text = unset)."""
    if isinstance(control, widgets.Text):
        return control.value.strip() or None
    return control.value


def bounded_int_slider(name: str, value: int, low: int, high: int, help_text: str
                       ) -> widgets.IntSlider:
    """A slider for a value whose range depends on the model (freezing depth)."""
    return widgets.IntSlider(value=max(low, min(high, value)), min=low, max=high,
                             description=name, style=STYLE, layout=LAYOUT, tooltip=help_text)
