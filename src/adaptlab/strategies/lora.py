"""LoRA through peft, with targets and saved modules derived from the layer map.

Two peft pitfalls are handled here rather than left to the user: ``target_modules`` must be
chosen per architecture (peft's defaults cover language models only), and the new head plus
every BatchNorm layer must go in ``modules_to_save``, or a reloaded adapter silently loses the
head and the running statistics (peft #602, #876, #577). The engine reloads every saved run
into a fresh model and compares logits, which catches such a loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap, modules_under
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig
from adaptlab.strategies.registry import register_strategy

ADAPTER_DIR = "adapter"

# Layer types peft's LoRA can wrap. Depthwise/grouped convs are left out on purpose: a rank-r
# update to a per-channel filter bank is not a low-rank saving and peft's grouped-conv support
# depends on the version.
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclass
class LoraStrategyConfig(StrategyConfig):
    r: int = field(default=8, metadata={"min": 1, "max": 1024, "help": "LoRA rank"})
    alpha: float = field(default=16.0, metadata={"min": 1e-6, "max": 1e6,
                                                  "help": "LoRA scaling numerator (alpha / r)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95})
    targets: str = field(default="auto", metadata={
        "help": "'auto' (every Linear/Conv in the backbone's blocks) or comma-separated "
                "module names"})
    save_norms: bool = field(default=True, metadata={
        "help": "train and save BatchNorm layers with the adapter (their running stats)"})
    use_dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (DoRA)"})


def _wrappable(module: nn.Module) -> bool:
    if not isinstance(module, _SUPPORTED):
        return False
    return not (isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups != 1)


def derive_targets(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Every wrappable layer inside the backbone's blocks and neck (not the stem, not the
    head)."""
    block_names = [name for block in layer_map.blocks for name in block] + list(layer_map.neck)
    return sorted({name for name, module in modules_under(model, block_names)
                   if _wrappable(module)})


def derive_modules_to_save(model: nn.Module, layer_map: LayerMap, save_norms: bool) -> list[str]:
    names = [layer_map.head] if layer_map.head else []
    if save_norms:
        names += [name for name, module in model.named_modules()
                  if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    return names


@register_strategy
class LoraStrategy(Strategy):
    name = "lora"
    config_class = LoraStrategyConfig
    description = "low-rank adapters (peft) on the backbone's blocks; head and BatchNorm saved"

    def plan(self, model: nn.Module, layer_map: LayerMap) -> dict[str, list[str]]:
        """The adapter plan: which modules LoRA wraps and which are saved whole."""
        if self.config.targets == "auto":
            targets = derive_targets(model, layer_map)
        else:
            targets = [t.strip() for t in self.config.targets.split(",") if t.strip()]
            modules = dict(model.named_modules())
            for target in targets:
                if target not in modules:
                    raise AdaptlabError(f"strategy 'lora': target {target!r} is not a module "
                                        "of this model")
                if not _wrappable(modules[target]):
                    raise AdaptlabError(
                        f"strategy 'lora': target {target!r} is a {type(modules[target]).__name__}"
                        "; LoRA wraps Linear, Conv1d/2d/3d (groups=1) and Embedding layers")
        if not targets:
            raise AdaptlabError("strategy 'lora': this backbone has no layer LoRA can wrap")
        if self.config.use_dora and any(
                isinstance(dict(model.named_modules())[t], nn.Conv1d | nn.Conv3d)
                for t in targets):
            raise AdaptlabError("strategy 'lora': use_dora=true supports Linear, Conv2d and "
                                "Embedding only; this plan targets Conv1d/Conv3d layers")
        saved = derive_modules_to_save(model, layer_map, self.config.save_norms)
        names = [name for name, _ in model.named_modules()]
        for name in saved:
            # peft selects modules_to_save by plain string suffix ("head" also matches
            # "conv_head"); refuse a plan that would wrap more than the named module.
            extra = [other for other in names if other != name and other.endswith(name)]
            if extra:
                raise AdaptlabError(f"strategy 'lora': saving {name!r} would also catch "
                                    f"{extra[0]!r} (peft matches module names by suffix)")
        overlap = sorted(set(targets) & set(saved))
        if overlap:
            raise AdaptlabError(f"strategy 'lora': {overlap[0]!r} cannot be both a LoRA target "
                                "and a fully saved module")
        return {"target_modules": targets, "modules_to_save": saved}

    def peft_config(self, model: nn.Module, layer_map: LayerMap):
        from peft import LoraConfig

        plan = self.plan(model, layer_map)
        return LoraConfig(r=self.config.r, lora_alpha=self.config.alpha,
                          lora_dropout=self.config.dropout, use_dora=self.config.use_dora,
                          target_modules=plan["target_modules"],
                          modules_to_save=plan["modules_to_save"])

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model, layer_map))

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        """peft has already set it: the adapters and the saved modules train."""

    def saved_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}

    def load_saved(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                   ignore_mismatched: bool = False) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, tensors,
                                           ignore_mismatched_sizes=ignore_mismatched)
        if result.unexpected_keys:
            raise AdaptlabError(f"strategy 'lora': saved tensors this adapter lacks, e.g. "
                                f"{result.unexpected_keys[0]!r}")

    def save_final(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        """The adapter as peft saves it (config + safetensors), so peft alone can load it."""
        import shutil

        adapter_dir = out_dir / ADAPTER_DIR
        tmp_dir = out_dir / f".{ADAPTER_DIR}.tmp"
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
        model.save_pretrained(str(tmp_dir))
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        tmp_dir.rename(adapter_dir)
        size = sum(p.stat().st_size for p in adapter_dir.iterdir())
        return {"weights_file": f"{ADAPTER_DIR}/adapter_model.safetensors",
                "weights_bytes": size}

    def final_tensors(self, run_dir: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = Path(run_dir) / ADAPTER_DIR / "adapter_model.safetensors"
        if not path.is_file():
            raise AdaptlabError(f"{run_dir} holds no LoRA adapter ({ADAPTER_DIR}/"
                                "adapter_model.safetensors missing)")
        return load_file(str(path))

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        with adapters_off(model, keep):
            yield model

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """peft's merge on a copy: LoRA folded into the weights, the saved modules as
        trained, names of the plain task model."""
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        return {k: v.detach() for k, v in merged.state_dict().items()}


@contextlib.contextmanager
def adapters_off(model: nn.Module, keep: str | None) -> Iterator[None]:
    """peft's ``disable_adapter()`` also swaps a saved head back to its untrained original;
    this switches off every adapter layer and saved module except ``keep`` (the head)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    switched = []
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and keep and keep in name:
            continue
        if isinstance(module, BaseTunerLayer | ModulesToSaveWrapper):
            module.enable_adapters(False)
            switched.append(module)
    try:
        yield
    finally:
        for module in switched:
            module.enable_adapters(True)
