"""What the prompt strategies share: the backbone frozen (and kept in eval mode, as VPT's
reference code runs it), a prompt module added to the backbone under the strategy's name and
hooked into its token sequence by ``apply`` (built from a seed, so every reload rebuilds it
the same before its trained tensors are loaded), only that module and the task head train,
prompts switched off for the unadapted model, and nothing to fold into the base weights."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, set_requires_grad
from adaptlab.strategies.prompts.insertion import TokenSite, find_site


def seeded(seed: int, build):
    """``build()`` under ``seed``, leaving the global RNG as it was: applying a strategy
    changes nothing about training's random draws, and a reload rebuilds the same module."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class PromptStrategy(Strategy):
    """Subclasses set ``name``, ``config_class``, ``families`` (the token families they take)
    and give :meth:`build` (the prompt module, hooked into the site)."""

    keeps_structure = True  # an export holds the prompt module, rebuilt by apply()
    families: ClassVar[tuple[str, ...] | None] = None  # None: every token family
    shards = True

    # -- override points -------------------------------------------------------------------
    def build(self, site: TokenSite) -> nn.Module:
        """The prompt module for ``site``, its hooks installed; built from the config's seed."""
        raise NotImplementedError

    def check_site(self, site: TokenSite) -> None:
        """Refuse options that do not fit this backbone (raise AdaptlabError)."""

    # -- the lifecycle ---------------------------------------------------------------------
    def site(self, model: nn.Module, layer_map: LayerMap) -> TokenSite:
        """The token site of ``model``'s backbone; refuses a backbone no family fits."""
        backbone = model.get_submodule(_backbone_attribute(self.name, model, layer_map))
        modules = dict(model.named_modules())
        blocks = []
        for entries in layer_map.blocks:
            found = [modules[name] for name in entries if name in modules]
            blocks.append(found[0] if len(found) == 1 else None)
        return find_site(self.name, backbone, blocks, self.families)

    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        site = self.site(model, layer_map)
        self.check_site(site)
        if hasattr(site.backbone, self.name):
            raise AdaptlabError(f"strategy {self.name!r}: backbone {type(site.backbone).__name__} "
                                f"already has an attribute {self.name!r}")

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        self.check_model(model, layer_map)
        site = self.site(model, layer_map)
        site.backbone.add_module(self.name, self.build(site))
        return model

    def prompt_module(self, model: nn.Module, layer_map: LayerMap | None = None) -> nn.Module:
        """The module :meth:`apply` added (searched by name: the backbone's attribute)."""
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] == self.name and hasattr(module, "enabled"):
                return module
        raise AdaptlabError(f"strategy {self.name!r}: the model has no prompt module "
                            "(apply() has not run on it)")

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], False)
        set_requires_grad([self.prompt_module(model)], True)
        if layer_map.head:
            set_requires_grad([model.get_submodule(layer_map.head)], True)

    def train_mode(self, model: nn.Module) -> None:
        """The frozen backbone runs in eval mode (no dropout, fixed statistics), as VPT's
        reference code runs its encoder; the prompt module and the head train."""
        super().train_mode(model)
        prompts = self.prompt_module(model)
        own = set(prompts.modules())
        for module in _owner_of(model, prompts).modules():
            if module not in own:
                module.training = False

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        """The frozen model with the run's head: the prompt module switched off in place."""
        prompts = self.prompt_module(model)
        prompts.enabled = False
        try:
            yield model
        finally:
            prompts.enabled = True

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        raise AdaptlabError(f"strategy {self.name!r}: its prompt module cannot be folded into "
                            "the base model's weights (nothing to merge; export the run as it "
                            "is)")


def _backbone_attribute(strategy: str, model: nn.Module, layer_map: LayerMap) -> str:
    """The task model's attribute holding the backbone: the first name part every backbone
    entry of the (prefixed) layer map shares."""
    entries = layer_map.entries()
    roots = {entry.split(".", 1)[0] for entry in entries}
    if len(roots) != 1 or not all("." in entry for entry in entries):
        raise AdaptlabError(f"strategy {strategy!r}: the task model {type(model).__name__} "
                            "does not hold its backbone under one attribute")
    return roots.pop()


def _owner_of(model: nn.Module, child: nn.Module) -> nn.Module:
    """The module ``child`` is a direct attribute of (the backbone)."""
    for module in model.modules():
        if any(sub is child for sub in module.children()):
            return module
    raise AdaptlabError("the prompt module is not inside the model")
