"""A finished run folder back in memory: its data, its adapted model and the unadapted one.

"Unadapted" keeps the run's task head where the backbone had none (a new classifier is
needed to name the classes at all), so the comparison isolates what adapting the backbone
changed. A backbone that ships its own head (a forecaster) is compared with itself as
published. Where a strategy can switch its adaptation off in place (peft's adapters), it does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.config import RunConfig
from adaptlab.engine.device_path import run_channels_last
from adaptlab.errors import AdaptlabError


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    domain: Any
    data: Any
    backbone: Any
    strategy: Any
    model: nn.Module
    layer_map: Any
    metrics: dict
    costs: dict
    _build_fresh: Any = None
    source_head: bool = False  # the run started from a source run's head (init_from)

    @property
    def before_label(self) -> str:
        """What "before adaptation" is: the pre-trained model, or for a transfer run the
        source run's model (the seed papers' before/after-transfer comparison)."""
        return "source model (before transfer)" if self.config.init_from else "unadapted"

    @contextlib.contextmanager
    def unadapted(self) -> Iterator[nn.Module]:
        """The model before adaptation, as a context: where the strategy can switch its
        adaptation off in place (peft), it does, and switches it back on when the context
        closes; otherwise a fresh model with the run's trained head."""
        keep = self.layer_map.head if self.backbone.pretrained_head is None else None
        with self.strategy.unadapted(self.model, keep) as in_place:
            if in_place is not None:
                yield in_place
                return
        fresh, _ = self._build_fresh()
        if keep and not self.source_head:
            head = keep + "."
            trained = {k: v for k, v in self.model.state_dict().items() if k.startswith(head)}
            fresh.load_state_dict(trained, strict=False)
        device = next(self.model.parameters()).device
        yield fresh.to(device).eval()

    def predict(self, data: Any = None, *, split: str | None = None, out: str | Path | None = None,
                batch_size: int | None = None, progress: bool = False, num_workers: int = 0,
                options: dict[str, Any] | None = None):
        """The adapted model applied to new inputs: ``data`` (a file or folder read the way
        ``--data`` reads training data, labels ignored) or the run's own ``split``.

        Returns :class:`adaptlab.predict.Predictions` (a table, and the files written to
        ``out``, by default ``RUN_DIR/predictions/``). ``options`` are the task's own
        (``top_k`` for retrieval, ...: its writer's ``option_defaults``).

        >>> run = load_run("runs/wildlife-lora", with_data=False)  # doctest: +SKIP
        >>> run.predict("new_photos/").table.head()  # doctest: +SKIP
        """
        from adaptlab.predict.runner import predict

        return predict(self, data, split=split, out=out, batch_size=batch_size,
                       progress=progress, num_workers=num_workers, options=options)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # cut off mid-write, or another tool's file
        raise AdaptlabError(f"{path}: not readable JSON ({exc})") from exc


def load_run(run_dir: str | Path, device: str | None = None, with_data: bool = True) -> LoadedRun:
    """Rebuild the run in ``run_dir`` with its saved weights; refuses unfinished runs.

    ``with_data=False`` reads the data's description the run saved (``data.json``: class
    names, grid, what preprocessing took from the training data) instead of the data itself:
    enough to predict on new inputs where the training data is not at hand."""
    from adaptlab.assembly import assemble, build_backbone
    from adaptlab.data.splits import SplitDataset
    from adaptlab.tasks.registry import make_task

    run_dir = Path(run_dir)
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise AdaptlabError(f"{run_dir} is not a finished run ({name} missing)")
    described = None
    if not with_data and (run_dir / "data.json").is_file():
        described = SplitDataset.from_description(_read_json(run_dir / "data.json"))
    parts = assemble(RunConfig.from_file(run_dir / "config.json"), data=described)
    config, domain, strategy, data, backbone = (parts.config, parts.domain, parts.strategy,
                                                parts.data, parts.backbone)
    if described is None and (run_dir / "data.json").is_file():
        # The task's options as the run recorded them: the data read again may name other
        # parts (a generation dataset's language model, whose weights the run does not save).
        saved = _read_json(run_dir / "data.json").get("task_options")
        if saved is not None:
            data.task_options = saved
    task = make_task(data, config.class_weighting, backbone, config.forecast_loss)

    def from_source(model, layer_map) -> bool:
        """A transfer run's starting weights: what its own weights file does not hold
        (a head-only or frozen run keeps the source's backbone) comes from there."""
        if not config.init_from:
            return False
        from adaptlab.transfer.init_weights import load_source_weights

        return load_source_weights(model, layer_map, config.init_from,
                                   data.class_names or None)["head"] > 0

    def build_fresh():
        fresh, fresh_map = task.build_model(build_backbone(config, domain, data), strategy.config)
        from_source(fresh, fresh_map)
        return fresh, fresh_map

    model, layer_map = task.build_model(backbone, strategy.config)
    source_head = from_source(model, layer_map)
    # The strategy gives the model its structure (adapters, prompts, side networks) exactly
    # as it did for training, then loads what it saved.
    model = strategy.apply(model, layer_map)
    strategy.load_final(model, run_dir)
    target = torch.device(device) if device else \
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(target).eval()
    run_channels_last(model, config, target)
    metrics = _read_json(run_dir / "metrics.json")
    costs_path = run_dir / "costs.json"
    costs = _read_json(costs_path) if costs_path.is_file() else {}
    return LoadedRun(run_dir, config, domain, data, backbone, strategy, model, layer_map,
                     metrics, costs, build_fresh, source_head)
