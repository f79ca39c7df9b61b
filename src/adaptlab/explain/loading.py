"""A finished run folder back in memory: its data, its adapted model and the unadapted one.

"Unadapted" keeps the run's task head where the backbone had none (a new classifier is
needed to name the classes at all), so the comparison isolates what adapting the backbone
changed. A backbone that ships its own head (a forecaster) is compared with itself as
published. For peft runs the adapter is switched off in place, as PEFT users do it.
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
        """The model before adaptation, as a context: peft adapters are switched back on
        when it closes."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            with _adapters_off(self.model, self.backbone.pretrained_head is None, self.layer_map.head):
                yield self.model
            return
        fresh, _ = self._build_fresh()
        if self.backbone.pretrained_head is None and self.layer_map.head \
                and not self.source_head:
            head = self.layer_map.head + "."
            trained = {k: v for k, v in self.model.state_dict().items() if k.startswith(head)}
            fresh.load_state_dict(trained, strict=False)
        device = next(self.model.parameters()).device
        yield fresh.to(device).eval()


@contextlib.contextmanager
def _adapters_off(model, keep_head: bool, head: str | None) -> Iterator[None]:
    """peft's ``disable_adapter()`` also swaps a saved head back to its untrained original;
    this switches off every adapter layer and saved module except the head."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    switched = []
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and keep_head and head and head in name:
            continue
        if isinstance(module, BaseTunerLayer | ModulesToSaveWrapper):
            module.enable_adapters(False)
            switched.append(module)
    try:
        yield
    finally:
        for module in switched:
            module.enable_adapters(True)


def load_run(run_dir: str | Path, device: str | None = None) -> LoadedRun:
    """Rebuild the run in ``run_dir`` with its saved weights; refuses unfinished runs."""
    from safetensors.torch import load_file

    from adaptlab.run import assemble, build_backbone
    from adaptlab.tasks.registry import make_task

    run_dir = Path(run_dir)
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise AdaptlabError(f"explain: {run_dir} is not a finished run ({name} missing)")
    parts = assemble(RunConfig.from_file(run_dir / "config.json"))
    config, domain, strategy, data, backbone = (parts.config, parts.domain, parts.strategy,
                                                parts.data, parts.backbone)
    task = make_task(data, config.class_weighting, backbone, config.forecast_loss)

    def from_source(model) -> bool:
        """A transfer run's starting weights: what its own weights file does not hold
        (a head-only or frozen run keeps the source's backbone) comes from there."""
        if not config.init_from:
            return False
        from adaptlab.transfer.init_weights import load_source_weights

        return load_source_weights(model, config.init_from, data.class_names or None)["head"] > 0

    def build_fresh():
        fresh, fresh_map = task.build_model(build_backbone(config, domain, data), strategy.config)
        from_source(fresh)
        return fresh, fresh_map

    model, layer_map = task.build_model(backbone, strategy.config)
    source_head = from_source(model)
    adapter = run_dir / "adapter"
    if adapter.is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    else:
        weights = run_dir / "weights.safetensors"
        if not weights.is_file():
            raise AdaptlabError(f"explain: {run_dir} holds no weights (weights.safetensors or "
                                "adapter/)")
        strategy.load_changed(model, load_file(str(weights)))
    target = torch.device(device) if device else \
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(target).eval()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    costs_path = run_dir / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.is_file() else {}
    return LoadedRun(run_dir, config, domain, data, backbone, strategy, model, layer_map,
                     metrics, costs, build_fresh, source_head)
