"""The ladder: a frozen backbone run without autograd, its block outputs fed through
down-projections and learned gates into a narrow side network (LST, Sung et al. 2022).

Per backbone block ``i``: ``side = g_i * side_block_i(side) + (1 - g_i) * down_{i+1}(h_{i+1})``
with ``g_i = sigmoid(alpha_i / T)``, ``alpha_i`` trainable from 0 and ``T = 0.1``, ``h_{i+1}``
block ``i``'s output; or, with ``tap_order=before`` (the LST reference's runs),
``side = side_block_i(g_i * side + (1 - g_i) * down_{i+1}(h_{i+1}))``. The side starts from
``down_0`` of block 0's input (the embeddings' output); blocks left out of ``side_layers``
have no side block and no rung. Its last state is pooled as the backbone pools and
up-projected to the backbone's feature size, so the task head reads it as it would read the
backbone's pooled features. A backbone whose heads read per-step states
(Fracast, :mod:`.series`) gets the side's per-step correction added to its own final states.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from adaptlab.backbones.features import capture_block_outputs
from adaptlab.backbones.layer_map import LayerMap
from adaptlab.backbones.point_nets import max_pool
from adaptlab.strategies.lst.families import SideDesign

# LST's gate temperature: a small T makes the gates move quickly away from 0.5 once alpha moves.
GATE_TEMPERATURE = 0.1


def pool(x: torch.Tensor, rule: str, keep: torch.Tensor | None, prefix_tokens: int
         ) -> torch.Tensor:
    """Pool the side's last state as the backbone pools its own (``SideDesign.pool``)."""
    if rule == "mask_mean":
        mask = keep.unsqueeze(-1).to(x.dtype)
        return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if rule == "cls":
        return x[:, 0]
    if rule == "token_mean":
        return x[:, prefix_tokens:].mean(1)
    if rule == "max_mean":
        return torch.cat([max_pool(x, 1), x.mean(dim=1)], dim=-1)
    if rule == "map_mean":
        return x.mean(dim=(2, 3))
    raise ValueError(f"unknown pooling rule {rule!r}")


class SideNetwork(nn.Module):
    """Everything that trains besides the task head: down-projections, gates, side blocks,
    the final norm, the up-projection and, with ``merge_last``, the last gate.

    ``merge_last`` (the reference code's option, on in its LST runs) mixes the backbone's own
    output into the side's: ``g * up(side) + (1 - g) * backbone``, ``g = sigmoid(alpha / T)``
    from 0.5. The head then starts from the pre-trained features instead of a narrow random
    projection of them: without it the side underfits where head-only does not (code demo,
    3 epochs: training accuracy 0.370 against 0.598). A ``series`` side is already added to
    the backbone's states (a correction from zero), so the option changes nothing there."""

    def __init__(self, design: SideDesign, init_seed: int, merge_last: bool = False,
                 zero_up: bool = False, kept: list[int] | None = None,
                 tap_before: bool = False) -> None:
        super().__init__()
        # Blocks the side shadows (``side_layers``); a dropped block has no side block, no
        # rung and no gate: the side's state passes it by.
        self.kept = list(range(len(design.blocks))) if kept is None else list(kept)
        self.tap_before = tap_before
        self.blocks = nn.ModuleList(design.blocks[index] for index in self.kept)
        self.norm = design.norm
        self.pool_rule, self.prefix_tokens = design.pool, design.prefix_tokens
        self.takes_mask = design.mask_input is not None
        self.gate_alpha = nn.Parameter(torch.zeros(len(self.kept)))
        self.merge_alpha = (nn.Parameter(torch.zeros(1))
                            if merge_last and design.pool != "series" else None)
        pooled = design.side_widths[-1] * (2 if design.pool == "max_mean" else 1)
        # Projections start random; drawn from their own seed, not the global RNG, so apply()
        # on a fresh model builds the same side network every time (a reload, an export).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            rungs = [0, *(index + 1 for index in self.kept)]
            self.down = nn.ModuleList(
                nn.Conv2d(design.tap_widths[rung], design.side_widths[rung], 1)
                if design.layout == "map"
                else nn.Linear(design.tap_widths[rung], design.side_widths[rung])
                for rung in rungs)
            self.up = nn.Linear(pooled, design.num_features)
        # A correction to the backbone's states, from zero; or, asked for (``zero_up``), a
        # side that starts by adding nothing, so the head first reads the backbone's own
        # features (through the last gate) instead of a random projection beside them.
        if design.pool == "series" or zero_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def gates(self) -> torch.Tensor:
        """``g_i = sigmoid(alpha_i / T)``: the share of the side's own state at block ``i``."""
        return torch.sigmoid(self.gate_alpha / GATE_TEMPERATURE)

    def forward(self, taps: list[torch.Tensor], keep: torch.Tensor | None = None,
                backbone: torch.Tensor | None = None) -> torch.Tensor:
        """``taps``: block 0's input, then every block's output; ``backbone``: the backbone's
        own pooled output (read with ``merge_last``); returns pooled features (per-step ones
        for the ``series`` layout)."""
        gates = self.gates()
        side = self.down[0](taps[0])
        for position, (index, block) in enumerate(zip(self.kept, self.blocks, strict=True)):
            gate, rung = gates[position], self.down[position + 1](taps[index + 1])
            if self.tap_before:
                side = gate * side + (1 - gate) * rung
            side = block(side, keep) if self.takes_mask else block(side)
            if not self.tap_before:
                side = gate * side + (1 - gate) * rung
        if self.pool_rule == "series":
            return self.up(self.norm(side))
        out = self.up(pool(self.norm(side), self.pool_rule, keep, self.prefix_tokens))
        if self.merge_alpha is None:
            return out
        merge = torch.sigmoid(self.merge_alpha / GATE_TEMPERATURE)
        return merge * out + (1 - merge) * backbone


class LadderBackbone(nn.Module):
    """Takes the frozen backbone's place in the task model, with its call contract: inputs
    in, pooled features ``[B, num_features]`` out.

    In training mode the backbone runs under ``torch.no_grad()``: autograd saves nothing of
    it, which is LST's memory saving. In eval mode grad mode is left as the caller set it:
    evaluation runs without gradients anyway, and attribution methods need the gradient of
    the output with respect to the input, through the backbone.

    ``dropout``: while training, the frozen backbone drops out as it would being fine-tuned
    (the reference runs the frozen T5 in training mode, so the states its side reads are
    those of a model with dropout); without it the backbone is in eval mode throughout."""

    def __init__(self, frozen: nn.Module, block_map: LayerMap, side: SideNetwork,
                 mask_input: str | None, rungs: list[str] | None = None,
                 dropout: bool = False) -> None:
        super().__init__()
        self.frozen = frozen
        self.side = side
        # The backbone's own map (names relative to ``frozen``): plain data, not state.
        self.block_map = block_map
        self.mask_input = mask_input
        self.rungs = rungs  # SideDesign.rungs
        self.dropout = dropout

    def train(self, mode: bool = True) -> LadderBackbone:
        """The backbone's normalisation statistics stay fixed (BatchNorm in eval mode,
        whatever mode the side trains in): frozen means frozen statistics too. The rest of it
        follows ``mode`` where ``dropout`` is on, else stays in eval mode."""
        super().train(mode)
        self.frozen.train(mode and self.dropout)
        for module in self.frozen.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.eval()
        return self

    def taps(self, *args: Any, **kwargs: Any) -> tuple[list[torch.Tensor], Any]:
        """Block 0's input (a pre-hook on it) and every block's output (every rung's, where
        the design names rungs), from one forward; and that forward's output (the per-step
        states, ``forward_features``, for the ``series`` layout)."""
        first_input: list[torch.Tensor] = []

        def record(_module: nn.Module, hook_args: tuple, hook_kwargs: dict) -> None:
            first_input.append(hook_args[0] if hook_args else
                               next(iter(hook_kwargs.values())))

        modules = dict(self.frozen.named_modules())
        first = next(modules[name] for name in self.block_map.blocks[0] if name in modules)
        handles = [first.register_forward_pre_hook(record, with_kwargs=True)]
        try:
            if self.rungs is None:
                captured = capture_block_outputs(self.frozen, self.block_map, None,
                                                 lambda: self.frozen(*args, **kwargs))
                outputs, output = captured.blocks, captured.features
            else:
                outputs = []
                handles += [modules[name].register_forward_hook(
                    lambda _m, _a, out: outputs.append(out)) for name in self.rungs]
                output = self.frozen.forward_features(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return [first_input[0], *outputs], output

    def _side_forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        frozen_context = torch.no_grad() if self.training else contextlib.nullcontext()
        with frozen_context:
            taps, output = self.taps(*args, **kwargs)
        keep = kwargs.get(self.mask_input) if self.mask_input else None
        side = self.side(taps, keep, output)
        return side if self.side.pool_rule != "series" else output + side

    def forward_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Per-step states for the ``series`` layout; otherwise not given: the side network
        ends in pooled features (a task reading per-token or per-point features, such as
        segmentation, cannot use this strategy)."""
        from adaptlab.errors import AdaptlabError

        if self.side.pool_rule == "series":
            return self._side_forward(*args, **kwargs)
        raise AdaptlabError("strategy 'lst' gives pooled features only; this task reads the "
                            "backbone's unpooled features (use it for classification or "
                            "retrieval)")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        features = self._side_forward(*args, **kwargs)
        if self.side.pool_rule == "series":  # pooled, where the backbone pools, as it does
            return self.frozen.pooled(features, *args, **kwargs)
        return features
