"""What every peft method shares: targets and saved modules derived from the layer map, the
adapter saved with ``save_pretrained`` and reloaded, the adapters switched off, merging.

Two peft pitfalls are handled here rather than left to the user: ``target_modules`` must be
chosen per architecture (peft's defaults cover language models only), and the new head plus
every BatchNorm layer must go in ``modules_to_save``, or a reloaded adapter silently loses the
head and the running statistics (peft #602, #876, #577). The engine reloads every saved run
into a fresh model and compares logits, which catches such a loss.

A method declares the layer types peft's own dispatch wraps for it (its ``_create_new_module``
in peft 0.21); a backbone whose blocks hold none of them is refused before the run starts, in
one line naming the method, the layer types the blocks do hold and the methods that would work.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap, modules_under
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

# Every peft method adaptlab ships, in the order refusals list them.
PEFT_METHODS = ("lora", "ia3", "loha", "lokr", "oft", "vera", "adalora")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class PeftStrategyConfig(StrategyConfig):
    """Options every peft method shares: where the adapters go and what is saved whole."""

    targets: str = field(default="auto", metadata={
        "help": "'auto' (every layer of a supported type in the backbone's blocks) or "
                "comma-separated module names"})
    save_norms: bool = field(default=True, metadata={
        "help": "train and save BatchNorm layers with the adapter (their running stats)"})


def wrappable(module: nn.Module, layer_types: tuple[type, ...]) -> bool:
    """Whether ``module`` is one of ``layer_types``. Grouped (depthwise) convolutions are left
    out on purpose: a low-rank or per-channel update of a per-channel filter bank saves
    nothing, and peft's grouped-conv support differs between methods and versions."""
    if not isinstance(module, layer_types):
        return False
    return not (isinstance(module, _CONVS) and module.groups != 1)


def block_entries(layer_map: LayerMap) -> list[str]:
    """The backbone's blocks and neck: where adapters go (not the stem, not the head)."""
    return [name for block in layer_map.blocks for name in block] + list(layer_map.neck)


def derive_targets(model: nn.Module, layer_map: LayerMap,
                   layer_types: tuple[type, ...] | None = None,
                   accepts: Callable[[nn.Module], bool] | None = None) -> list[str]:
    """Every layer of ``layer_types`` (default: LoRA's) inside the backbone's blocks and
    neck; ``accepts`` narrows further (a method's own limits)."""
    if layer_types is None:
        from adaptlab.strategies.peft_family.lora import LORA_LAYER_TYPES

        layer_types = LORA_LAYER_TYPES
    return sorted({name for name, module in modules_under(model, block_entries(layer_map))
                   if wrappable(module, layer_types) and (accepts is None or accepts(module))})


def block_layer_types(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Type names of the modules that hold parameters in the backbone's blocks and neck, in
    the order they first appear; a grouped convolution is named as such."""
    seen: dict[str, None] = {}
    for _, module in modules_under(model, block_entries(layer_map)):
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        name = type(module).__name__
        if isinstance(module, _CONVS) and module.groups != 1:
            name += " (grouped)"
        seen.setdefault(name, None)
    return list(seen)


def derive_modules_to_save(model: nn.Module, layer_map: LayerMap, save_norms: bool) -> list[str]:
    names = [layer_map.head] if layer_map.head else []
    if save_norms:
        names += [name for name, module in model.named_modules()
                  if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    return names


def methods_that_apply(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """The peft methods with at least one target among the backbone's blocks."""
    from adaptlab.strategies.registry import get_strategy_class

    return [name for name in PEFT_METHODS
            if derive_targets(model, layer_map, get_strategy_class(name).layer_types,
                              get_strategy_class(name).accepts)]


def refusal(method: str, layer_types_text: str, model: nn.Module, layer_map: LayerMap) -> str:
    """The one line that refuses ``method`` on this backbone."""
    held = ", ".join(block_layer_types(model, layer_map)) or "no layers with parameters"
    working = ", ".join(methods_that_apply(model, layer_map)) or "none of the peft family"
    return (f"strategy {method!r}: applies to {layer_types_text}; this backbone's blocks hold "
            f"{held}; methods that apply: {working}")


class PeftStrategy(Strategy):
    """A peft method as a strategy. Subclasses set ``name``, ``config_class``,
    ``layer_types`` (what peft's dispatch wraps) and build the method's peft config in
    :meth:`method_config`."""

    layer_types: ClassVar[tuple[type, ...]] = ()
    # Whether the adapters-off model is the pre-trained one (PiSSA/OLoRA rewrite the base).
    base_untouched: ClassVar[bool] = True

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        """A method's limit beyond the layer type (override; ``module`` is of a type in
        ``layer_types``)."""
        return True

    @classmethod
    def layer_types_text(cls) -> str:
        names = [t.__name__ for t in cls.layer_types]
        conv = " (convolutions with groups=1)" if any(issubclass(t, _CONVS)
                                                       for t in cls.layer_types) else ""
        return ", ".join(names) + " layers" + conv

    # -- the plan ---------------------------------------------------------------------------
    def plan(self, model: nn.Module, layer_map: LayerMap) -> dict[str, list[str]]:
        """The adapter plan: which modules the method wraps and which are saved whole."""
        if self.config.targets == "auto":
            targets = derive_targets(model, layer_map, self.layer_types, self.accepts)
            if not targets:
                raise AdaptlabError(refusal(self.name, self.layer_types_text(), model,
                                            layer_map))
        else:
            targets = [t.strip() for t in self.config.targets.split(",") if t.strip()]
            self._check_named_targets(model, targets)
        if not targets:
            raise AdaptlabError(f"strategy {self.name!r}: targets={self.config.targets!r} "
                                "names no module")
        saved = derive_modules_to_save(model, layer_map, self.config.save_norms)
        names = [name for name, _ in model.named_modules()]
        for name in saved:
            # peft selects modules_to_save by plain string suffix ("head" also matches
            # "conv_head"); refuse a plan that would wrap more than the named module.
            extra = [other for other in names if other != name and other.endswith(name)]
            if extra:
                raise AdaptlabError(f"strategy {self.name!r}: saving {name!r} would also catch "
                                    f"{extra[0]!r} (peft matches module names by suffix)")
        overlap = sorted(set(targets) & set(saved))
        if overlap:
            raise AdaptlabError(f"strategy {self.name!r}: {overlap[0]!r} cannot be both an "
                                "adapter target and a fully saved module")
        self.check_plan(model, targets)
        return {"target_modules": targets, "modules_to_save": saved}

    def _check_named_targets(self, model: nn.Module, targets: list[str]) -> None:
        modules = dict(model.named_modules())
        for target in targets:
            if target not in modules:
                raise AdaptlabError(f"strategy {self.name!r}: target {target!r} is not a module "
                                    "of this model")
            if not (wrappable(modules[target], self.layer_types)
                    and self.accepts(modules[target])):
                raise AdaptlabError(
                    f"strategy {self.name!r}: target {target!r} is a "
                    f"{type(modules[target]).__name__}; {self.name} wraps "
                    f"{self.layer_types_text()}")

    def check_plan(self, model: nn.Module, targets: list[str]) -> None:
        """Refuse a plan the method's options do not fit (override per method)."""

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        """The method's peft config for ``plan``."""
        raise NotImplementedError

    def peft_config(self, model: nn.Module, layer_map: LayerMap):
        return self.method_config(model, self.plan(model, layer_map))

    # -- the lifecycle ----------------------------------------------------------------------
    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        self.plan(model, layer_map)

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
            raise AdaptlabError(f"strategy {self.name!r}: saved tensors this adapter lacks, "
                                f"e.g. {result.unexpected_keys[0]!r}")

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
        return {"weights_file": f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}", "weights_bytes": size}

    def final_tensors(self, run_dir: Path) -> dict[str, torch.Tensor]:
        from adaptlab.strategies.base import read_safetensors

        path = Path(run_dir) / ADAPTER_DIR / ADAPTER_WEIGHTS
        if not path.is_file():
            raise AdaptlabError(f"{run_dir} holds no {self.name} adapter ({ADAPTER_DIR}/"
                                f"{ADAPTER_WEIGHTS} missing)")
        return read_safetensors(path)

    def saved_adapter_config(self, run_dir: Path) -> dict[str, Any]:
        """The adapter config ``save_final`` wrote (peft's JSON)."""
        path = Path(run_dir) / ADAPTER_DIR / ADAPTER_CONFIG
        if not path.is_file():
            raise AdaptlabError(f"{run_dir} holds no {self.name} adapter config ({ADAPTER_DIR}/"
                                f"{ADAPTER_CONFIG} missing)")
        return json.loads(path.read_text())

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        if not self.base_untouched:
            yield None  # the base weights are not the pre-trained ones: build a fresh model
            return
        with adapters_off(model, keep):
            yield model

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """peft's merge on a copy: the adapters folded into the weights, the saved modules as
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


@contextlib.contextmanager
def held_warnings() -> Iterator[list]:
    """The warnings raised inside, held in the yielded list: the block removes those it says
    in its own words (peft's per-layer or misleading ones), and the rest are raised again on
    leaving, as they came (also when the block fails)."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
