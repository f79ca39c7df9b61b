"""The exported folder's ``README.md``: a Hugging Face model card.

The run's own ``MODEL_CARD.md`` is used when the run folder has one, with the YAML front
matter the Hub reads (``library_name``, ``tags``) put in front when it has none; otherwise a
short card is written from the run's config and its held-out metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_CARD = "MODEL_CARD.md"


def front_matter(facts: dict[str, Any]) -> str:
    """YAML the Hub reads: the library, tags to find the model by, the licence when known."""
    tags = ["adaptlab", *(str(facts[key]) for key in ("domain", "task", "strategy", "modality")
                          if facts.get(key))]
    lines = ["---", "library_name: adaptlab", "tags:", *(f"- {tag}" for tag in dict.fromkeys(tags))]
    if facts.get("license"):
        lines.append(f"license: {facts['license']}")
    return "\n".join([*lines, "---", ""]) + "\n"


def _metrics_table(metrics: dict[str, Any]) -> str:
    from adaptlab.summary import comparison_rows

    try:
        rows = comparison_rows(metrics, "test")
    except (KeyError, TypeError):  # a run without held-out metrics
        return "No held-out metrics were recorded.\n"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def written_card(facts: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short card: what was adapted, how, and how it did on the held-out split."""
    merged = ("adaptation merged into the weights" if facts["merged"]
              else "base weights plus a peft adapter in `adapter/`")
    return (
        front_matter(facts)
        + f"# {facts['domain']} {facts['task']} ({facts['strategy']})\n\n"
        + f"Backbone `{facts['backbone']}` adapted with the `{facts['strategy']}` strategy by "
        f"adaptlab for {facts['task']} of {facts['modality']} inputs; {merged}.\n\n"
        + "## Held-out (test) metrics\n\nThe adapted model beside the unadapted baselines the run "
        "measured on the same split.\n\n" + _metrics_table(metrics)
        + "\n## Use\n\n"
        "`preprocessing.json` says how raw inputs become the model's inputs; "
        "`config.json` names the classes and, under `adaptlab`, how the model was built.\n\n"
        "```python\nfrom adaptlab.export import load_exported\n\n"
        "model = load_exported(\"this-folder\")\n```\n")


def model_card(run_dir: Path, facts: dict[str, Any]) -> str:
    """The card's text: the run's ``MODEL_CARD.md`` with front matter, or a written one."""
    own = Path(run_dir) / RUN_CARD
    if own.is_file():
        text = own.read_text()
        return text if text.startswith("---\n") else front_matter(facts) + text
    metrics_path = Path(run_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return written_card(facts, metrics)
