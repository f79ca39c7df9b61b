"""The shared part of every strategy, with small override points (after Lightning's
``BaseFinetuning``): ``configure`` decides what trains, ``train_mode`` fixes module modes after
``model.train()``, ``callbacks`` adds per-step engine hooks, ``state_dict`` survives a resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from adaptlab.backbones.layer_map import NORM_TYPES, LayerMap
from adaptlab.schema import from_dict


@dataclass
class StrategyConfig:
    """Options every strategy shares: the shape of the new task head."""

    head: str = field(default="linear", metadata={
        "choices": ("linear", "mlp"), "help": "new classification head: Linear or a small MLP"})
    head_hidden: int = field(default=256, metadata={"min": 1, "max": 65_536,
                                                    "help": "MLP head hidden width"})
    head_dropout: float = field(default=0.2, metadata={"min": 0.0, "max": 0.95})


def set_requires_grad(modules: list[nn.Module], flag: bool) -> None:
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(flag)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


class Strategy:
    """Base class. Subclasses set ``name`` and ``config_class`` and override ``configure``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    description: ClassVar[str] = ""

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Strategy:
        return cls(from_dict(cls.config_class, options, owner=f"strategy {cls.name!r}"))

    @classmethod
    def option_names(cls) -> set[str]:
        from dataclasses import fields

        return {f.name for f in fields(cls.config_class)}

    # -- override points -------------------------------------------------------------------
    def check(self, layer_map: LayerMap) -> None:
        """Refuse options that do not fit this backbone (raise AdaptlabError)."""

    def configure(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        """Set what trains; may wrap ``model`` (PEFT) and return the model to train."""
        raise NotImplementedError

    def train_mode(self, model: nn.Module) -> None:
        """Called after ``model.train()``: frozen norm layers keep their running statistics."""
        for module in model.modules():
            if isinstance(module, NORM_TYPES):
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()

    def callbacks(self) -> list:
        """Engine callbacks (per-step hooks); dynamic strategies return theirs here."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """JSON-able strategy state stored in each checkpoint."""
        return {"name": self.name, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (freezing state must survive resume)."""

    # -- weights ---------------------------------------------------------------------------
    def changed_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors training can change: trainable parameters, and the buffers of modules
        that train (a frozen BatchNorm runs in eval mode, so its statistics stay as loaded)."""
        out = {name: p for name, p in model.named_parameters() if p.requires_grad}
        for module_name, module in model.named_modules():
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                continue
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer_name in module._non_persistent_buffers_set:
                    continue  # not part of a state dict (e.g. position ids): nothing to restore
                out[f"{module_name}.{buffer_name}" if module_name else buffer_name] = buffer
        return {name: t.detach().contiguous() for name, t in out.items()}

    def load_changed(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Put tensors saved by :meth:`changed_tensors` back (resume, best-epoch restore)."""
        result = model.load_state_dict(tensors, strict=False)
        if result.unexpected_keys:
            from adaptlab.errors import AdaptlabError

            raise AdaptlabError(f"checkpoint holds tensors this model lacks, e.g. "
                                f"{result.unexpected_keys[0]!r}")

    def save_final(self, model: nn.Module, out_dir: Path, context: dict[str, Any]
                   ) -> dict[str, Any]:
        """Write the adapted weights into the run folder; return facts for ``costs.json``."""
        from safetensors.torch import save_file

        from adaptlab.engine.atomic import atomic_write_with

        path = out_dir / "weights.safetensors"
        tensors = {k: v.cpu() for k, v in self.changed_tensors(model).items()}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp)))
        return {"weights_file": path.name, "weights_bytes": path.stat().st_size}
