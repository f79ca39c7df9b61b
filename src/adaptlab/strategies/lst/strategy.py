"""The ``lst`` strategy: Ladder Side-Tuning (Sung et al. 2022; reference code
ylsung/Ladder-Side-Tuning, ``modeling_side_t5.py``).

The task model's backbone is replaced by a :class:`LadderBackbone`: the pre-trained backbone,
frozen and run without autograd while training, plus a side network ``1/reduction`` as wide,
initialised from the backbone's own blocks pruned to that width. Only the side network and the
task head train, so neither gradients nor saved activations of the backbone are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig, set_requires_grad
from adaptlab.strategies.lst import series  # noqa: F401 - registers the Fracast family
from adaptlab.strategies.lst.families import UnitScores, design_side
from adaptlab.strategies.lst.ladder import LadderBackbone, SideNetwork
from adaptlab.strategies.registry import register_strategy


@dataclass
class LstConfig(StrategyConfig):
    reduction: int = field(default=8, metadata={
        "min": 1, "max": 64,
        "help": "side network width = backbone width / reduction (1..64; LST uses 8)"})
    merge_last: bool = field(default=True, metadata={
        "help": "mix the backbone's own output into the side network's through a last gate, "
                "starting at one half (the LST reference runs' merge_last)"})
    # Off by default: on the code demo (MiniLM, 3 seeds) it did not raise the test metric
    # at 5 or 15 epochs, and the side's attention dropout multiplies its saved activations
    # (PyTorch's attention then keeps its probabilities and mask for backward: 4.5x, 124.8
    # to 564.5 MiB at batch 32).
    dropout: bool = field(default=False, metadata={
        "help": "while training, the frozen backbone and the side blocks drop out at the "
                "backbone's own rates, as the LST reference does (BERT-style encoders: 0.1; "
                "backbones without dropout are unchanged)"})
    up_init: str = field(default="random", metadata={
        "choices": ("random", "zero"),
        "help": "the side's up-projection to the backbone's feature size starts random (the "
                "LST reference) or at zero, so the side starts by adding nothing to what the "
                "head reads"})
    pruning: str = field(default="magnitude", metadata={
        "choices": ("magnitude", "fisher"),
        "help": "which of the backbone's units the side starts from: those with the largest "
                "weights, or with the most Fisher information on the training data (LST's "
                "own ranking; one forward and backward per sample at the run's start)"})
    fisher_samples: int = field(default=1024, metadata={
        "min": 1, "max": 1_000_000,
        "help": "training samples the Fisher ranking reads (LST uses 1,024)"})
    tap_order: str = field(default="after", metadata={
        "choices": ("after", "before"),
        "help": "where a block's backbone output joins the side: after the side block "
                "shadowing it (the side's own state goes through its block first), or "
                "before it, so the side block reads the backbone's output (the LST "
                "reference's runs, add_residual_after=false); token and series sides only"})
    side_layers: str = field(default="all", metadata={
        "help": "the backbone blocks (0-based, comma-separated, e.g. 1,2,3,5) the side "
                "shadows with a block and a rung, or all; dropping some saves their "
                "activations (the LST reference drops blocks 0, 4 and 8 of T5-base's 12); "
                "token and series sides only"})
    init_seed: int = field(default=0, metadata={
        "min": 0, "max": 2**31 - 1,
        "help": "seed of the side network's random parts (down- and up-projections)"})


def backbone_attribute(layer_map: LayerMap) -> str:
    """The task model's attribute holding the backbone: the first name part every backbone
    entry of the (prefixed) layer map shares."""
    roots = {entry.split(".", 1)[0] for entry in layer_map.entries()}
    if len(roots) != 1 or not all("." in entry for entry in layer_map.entries()):
        raise AdaptlabError("strategy 'lst': the task model does not hold its backbone under "
                            "one attribute; a side network needs it")
    return roots.pop()


def unprefixed(layer_map: LayerMap, prefix: str) -> LayerMap:
    """``layer_map`` with ``prefix.`` removed from every entry (the backbone's own map)."""
    def strip(name: str) -> str:
        return name[len(prefix) + 1:]

    return LayerMap(embeddings=[strip(n) for n in layer_map.embeddings],
                    blocks=[[strip(n) for n in block] for block in layer_map.blocks],
                    neck=[strip(n) for n in layer_map.neck],
                    norms=[strip(n) for n in layer_map.norms if n.startswith(prefix + ".")])


@register_strategy
class LadderSideTuning(Strategy):
    name = "lst"
    shards = True
    config_class = LstConfig
    description = ("ladder side-tuning: a narrow side network fed by the frozen backbone's "
                   "blocks (run without gradients) trains with the head")
    keeps_structure = True  # an export holds the side network, rebuilt by apply()
    # Sung et al. (2022) train the side network at 3e-3 (T5 on GLUE): it is small and
    # partly new, like an adapter, not like the backbone.
    default_lr = 3e-3
    lr_range = (3e-4, 1e-2)
    # Runs recorded before 2026-12-05 had no last gate.
    options_before = {**Strategy.options_before, "merge_last": False}

    def check(self, layer_map: LayerMap) -> None:
        if layer_map.num_blocks == 0:
            raise AdaptlabError("strategy 'lst': the backbone's layer map has no blocks to "
                                "tap")
        backbone_attribute(layer_map)
        # Its form here; its range from the built side (check_model): Fracast's rungs are
        # the calls of its one shared block, so the layer map does not count them.
        kept_blocks(self.config.side_layers, None)

    def _design(self, model: nn.Module, layer_map: LayerMap, frozen: nn.Module | None = None,
                scored: nn.Module | None = None):
        """The side for ``frozen`` (by default the model's backbone), its units ranked by the
        weights of ``scored`` (a module shaped as the backbone; by default the backbone)."""
        attribute = backbone_attribute(layer_map)
        frozen = getattr(model, attribute) if frozen is None else frozen
        own_map = unprefixed(layer_map, attribute)
        blocks = [_block_module(frozen, block) for block in own_map.blocks]
        scores = None if scored is None else UnitScores(
            scored, [_block_module(scored, block) for block in own_map.blocks])
        # New layers draw their (overwritten) initial weights from the RNG: keep the global
        # stream untouched, so applying the strategy changes nothing about training's draws.
        with torch.random.fork_rng(devices=[]):
            design = design_side(frozen, blocks, self.config.reduction, scores)
        return attribute, frozen, own_map, design

    def _side(self, design) -> SideNetwork:
        kept = kept_blocks(self.config.side_layers, len(design.blocks))
        if design.layout == "map" and (self.config.tap_order == "before"
                                       or len(kept) < len(design.blocks)):
            raise AdaptlabError(
                "strategy 'lst': tap_order=before and side_layers need a side whose width "
                "stays the same through its blocks; this backbone's stages change width and "
                "resolution, so every stage keeps its side block (use tap_order=after, "
                "side_layers=all)")
        side = SideNetwork(design, self.config.init_seed, self.config.merge_last,
                           self.config.up_init == "zero", kept,
                           self.config.tap_order == "before")
        if not self.config.dropout:
            for module in side.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        return side

    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        # A backbone no family recognises, or options its family cannot take, refused here.
        self._side(self._design(model, layer_map)[3])

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        attribute, frozen, own_map, design = self._design(model, layer_map)
        side = self._side(design)
        setattr(model, attribute, LadderBackbone(frozen, own_map, side, design.mask_input,
                                                 design.rungs, self.config.dropout))
        return model

    def init_from_data(self, model: nn.Module, layer_map: LayerMap, batches, loss, device
                       ) -> dict | None:
        """With ``pruning=fisher``: the side network started again from the backbone's units
        ranked by their Fisher information on the training data. The side's shapes and its
        random parts (projections, from ``init_seed``) are those :meth:`apply` built, so a
        reload, which ranks by magnitude, loads the trained side into the same structure."""
        if self.config.pruning != "fisher":
            return None
        from adaptlab.strategies.lst.fisher import fisher_importance

        attribute = backbone_attribute(layer_map)
        ladder = getattr(model, attribute)
        scored, used = fisher_importance(model, attribute, ladder.frozen, batches, loss, device,
                                         self.config.fisher_samples)
        design = self._design(model, layer_map, ladder.frozen, scored)[3]
        ladder.side.load_state_dict(self._side(design).state_dict())
        return {"pruning": "fisher", "samples": used}

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], False)
        ladder = getattr(model, backbone_attribute(layer_map))
        set_requires_grad([ladder.side], True)
        if layer_map.head:
            set_requires_grad([model.get_submodule(layer_map.head)], True)

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        raise AdaptlabError("strategy 'lst': a ladder side network cannot be folded into the "
                            "base model's weights (nothing to merge; export the run as it is)")


def kept_blocks(side_layers: str, num_blocks: int | None) -> list[int]:
    """The block indices ``side_layers`` names (``all``, or 0-based comma-separated
    indices), ascending; refused by value where it names none, a block twice, or (given
    ``num_blocks``, the side's full count) one the side does not have."""
    if side_layers.strip() == "all":
        return list(range(num_blocks or 0))
    try:
        kept = [int(part) for part in side_layers.split(",")]
    except ValueError:
        raise AdaptlabError(f"strategy 'lst': side_layers={side_layers!r} is not 'all' or "
                            "comma-separated block indices (e.g. 1,2,3,5)") from None
    wrong = [index for index in kept
             if index < 0 or (num_blocks is not None and index >= num_blocks)]
    if wrong or len(set(kept)) != len(kept):
        within = "" if num_blocks is None else f" (0..{num_blocks - 1})"
        raise AdaptlabError(f"strategy 'lst': side_layers={side_layers!r}: "
                            + (f"block {wrong[0]} is out of range: this backbone's side "
                               f"shadows {num_blocks} blocks{within}" if wrong
                               else "names a block twice"))
    return sorted(kept)


def _block_module(frozen: nn.Module, entries: list[str]) -> nn.Module | None:
    """A block's module: its single module entry (the families shadow whole blocks); None
    for a block of several entries (Fracast's shared block with its scale conditioning: its
    family reads the backbone itself, :mod:`.series`)."""
    modules = dict(frozen.named_modules())
    found = [modules[name] for name in entries if name in modules]
    return found[0] if len(found) == 1 else None
