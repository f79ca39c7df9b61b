"""What a model card is written from: the run folder's files and the domain's metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec

EXPLANATION_FILE = Path("report") / "attributions.json"


@dataclass
class CardInputs:
    """One finished run as the card reads it. ``dataset`` is None for user data (``--data``);
    ``explanation`` is ``report/attributions.json`` once the run has been explained."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    costs: dict[str, Any]
    domain: DomainSpec
    backbone: BackboneSpec
    dataset: DatasetSpec | None
    explanation: dict[str, Any] | None

    @property
    def source_dataset(self) -> DatasetSpec | None:
        """The dataset's source domain, where the run used it (the zero-shot baseline)."""
        if self.dataset is None or not self.dataset.source_dataset:
            return None
        return self.domain.dataset(self.dataset.source_dataset)

    def test_metrics(self, which: str = "final") -> dict[str, float]:
        """Test metrics of the adapted model (``final``) or the unadapted baseline: the
        float values (integers are counts: samples, points)."""
        split = self.metrics.get(which, {}).get("test", {})
        return {k: v for k, v in split.items() if isinstance(v, float) and k != "loss"}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdaptlabError(f"{path}: cannot read ({exc})") from exc


def read_inputs(run_dir: str | Path) -> CardInputs:
    """Read a finished run folder; an unfinished one (no ``metrics.json``) is refused."""
    from adaptlab.plugins.registry import get_domain

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise AdaptlabError(f"{run_dir}: no metrics.json; a model card needs a finished run")
    # Every strategy option, defaults included, so the card and its command name what the run
    # used (a run recorded before runs listed them gets today's defaults).
    config = RunConfig.from_file(run_dir / "config.json").with_resolved_options()
    domain = get_domain(config.domain)
    explained = run_dir / EXPLANATION_FILE
    return CardInputs(
        run_dir=run_dir, config=config, metrics=_read(run_dir / "metrics.json"),
        costs=_read(run_dir / "costs.json") if (run_dir / "costs.json").is_file() else {},
        domain=domain, backbone=domain.backbone(config.backbone or domain.default_backbone),
        dataset=None if config.data else domain.dataset(config.dataset or domain.default_dataset),
        explanation=_read(explained) if explained.is_file() else None)
