"""``MODEL_CARD.md`` for a finished run: written at the end of training, rewritten once the
run has been explained (it gains the checks' results)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from adaptlab.engine.atomic import atomic_write_text
from adaptlab.errors import AdaptlabError
from adaptlab.model_card import sections
from adaptlab.model_card.inputs import CardInputs, read_inputs
from adaptlab.model_card.licences import single_licence_id

CARD_FILE = "MODEL_CARD.md"


class ModelCardWarning(UserWarning):
    """A finished run whose model card could not be written (the run itself is complete)."""


def _front_matter(card: CardInputs) -> list[str]:
    """The Hub's metadata block; values are JSON strings, which YAML reads as they are."""
    tags = ["adaptlab", card.domain.name, card.metrics.get("task", ""), card.config.strategy]
    lines = ["---", "library_name: adaptlab", "tags:"]
    lines += [f"- {json.dumps(tag)}" for tag in dict.fromkeys(t for t in tags if t)]
    licence = single_licence_id(card.dataset)
    if licence:
        lines.append(f"license: {json.dumps(licence)}  # the training data's single licence")
    hub = sections.hub_id(card.backbone)
    if hub and not card.config.backbone_weights and not card.config.init_from:
        lines.append(f"base_model: {json.dumps(hub)}")
    return [*lines, "---", ""]


def _title(card: CardInputs) -> list[str]:
    data = f"`{card.dataset.name}`" if card.dataset else "your data"
    return [f"# {card.backbone.name} adapted to {card.domain.name} ({data}) with "
            f"{card.config.strategy}", "",
            "Written by adaptlab from this run folder. Fill in what only you know (who trained "
            "it and why, your data's licence) before sharing the model.", ""]


def front_matter(run_dir: str | Path) -> str:
    """The Hub's metadata block for the run in ``run_dir`` (what a card edited without it,
    exported as a Hub folder's README, is given)."""
    return "\n".join(_front_matter(read_inputs(run_dir))) + "\n"


def model_card_text(run_dir: str | Path) -> str:
    """The card's markdown for the finished run in ``run_dir``."""
    card = read_inputs(run_dir)
    parts = [_front_matter(card), _title(card), sections.model_details(card),
             sections.adaptation(card), sections.training_data(card), sections.evaluation(card),
             sections.explanations(card), sections.limitations(card), sections.reproduce(card)]
    return "\n".join(line for part in parts for line in part).rstrip("\n") + "\n"


def write_model_card(run_dir: str | Path) -> Path:
    """Write ``MODEL_CARD.md`` into a finished run folder (atomically) and return its path.

    >>> write_model_card("runs/wildlife-head")  # doctest: +SKIP
    PosixPath('runs/wildlife-head/MODEL_CARD.md')
    """
    path = Path(run_dir) / CARD_FILE
    atomic_write_text(path, model_card_text(run_dir))
    return path


def try_write_model_card(run_dir: str | Path) -> Path | None:
    """:func:`write_model_card` where the run's own files are already safe: a card that
    cannot be written for a reason outside the code (a file unreadable, a plugin gone, the
    disk full) becomes a :class:`ModelCardWarning`, not a failed run. Anything else is a bug
    and is raised."""
    try:
        return write_model_card(run_dir)
    except (OSError, AdaptlabError) as exc:
        warnings.warn(f"{run_dir}: the run is complete, but {CARD_FILE} could not be written: "
                      f"{exc}", ModelCardWarning, stacklevel=2)
        return None
