"""LoRA through peft, with targets and saved modules derived from the layer map.

Two peft pitfalls are handled here rather than left to the user: ``target_modules`` must be
chosen per architecture (peft's defaults cover language models only), and the new head plus
every BatchNorm layer must go in ``modules_to_save``, or a reloaded adapter silently loses the
head and the running statistics (peft #602, #876, #577). After saving, the adapter is
reloaded into a fresh base model and its logits are compared with the trained model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap, modules_under
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig
from adaptlab.strategies.registry import register_strategy

ROUNDTRIP_TOLERANCE = 1e-5
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
    """Every wrappable layer inside the backbone's blocks (not the stem, not the head)."""
    block_names = [name for block in layer_map.blocks for name in block]
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

    def configure(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model, layer_map))

    def changed_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}

    def load_changed(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, tensors)

    def save_final(self, model: nn.Module, out_dir: Path, context: dict[str, Any]
                   ) -> dict[str, Any]:
        """Save the adapter, reload it into a fresh base model and compare logits."""
        from peft import PeftModel

        adapter_dir = out_dir / "adapter"
        tmp_dir = out_dir / ".adapter.tmp"
        model.save_pretrained(str(tmp_dir))
        if adapter_dir.exists():
            import shutil

            shutil.rmtree(adapter_dir)
        tmp_dir.rename(adapter_dir)
        batch = context["check_batch"]
        fresh = context["build_base_model"]()
        reloaded = PeftModel.from_pretrained(fresh, str(adapter_dir))
        diff = max_logit_difference(model, reloaded, batch)
        if diff > ROUNDTRIP_TOLERANCE:
            raise AdaptlabError(f"adapter saved in {adapter_dir} reloads with logits differing "
                                f"by {diff:.3g} (> {ROUNDTRIP_TOLERANCE}); not trusting it")
        size = sum(p.stat().st_size for p in adapter_dir.iterdir())
        return {"weights_file": "adapter/adapter_model.safetensors", "weights_bytes": size,
                "adapter_roundtrip_max_abs_diff": diff}


@torch.no_grad()
def max_logit_difference(a: nn.Module, b: nn.Module, batch) -> float:
    """Largest absolute difference between two models' outputs (tensors or tuples of them)."""
    from adaptlab.tasks.base import move_to

    was_training = a.training
    a.eval()
    b.eval()
    device = next(a.parameters()).device
    b.to(device)
    batch = move_to(batch, device)
    out_a, out_b = a(batch), b(batch)
    pairs = zip(out_a, out_b, strict=True) if isinstance(out_a, tuple) else [(out_a, out_b)]
    diff = max((x.float() - y.float()).abs().max().item() for x, y in pairs)
    a.train(was_training)
    return diff
