"""The ``svfit`` strategy: singular-value fine-tuning (Sun et al. 2024, "SVFit:
Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values").

For each target weight ``W = U S V^T`` the top-r singular vectors stay frozen and only the r
singular values train, scaling the matrix's principal subspaces; the rest of the spectrum is a
frozen residual, as in the paper. r keeps ``energy`` of the spectrum (sum of the kept squared
singular values over all of them, 0.99 by default: the paper's "over 99% of the matrix's
information") or is set with ``rank``. ``train_residual_rank`` k also trains the next k
singular values (not in the paper, which freezes the residual: an option for backbones whose
residual spectrum matters). The head and every BatchNorm layer train and are saved, as for
``lora``.

The run folder holds the trained singular values (with the head and the BatchNorm layers),
not the singular vectors: ``apply`` recomputes the SVD of the freshly built model's weights
(float64 on the CPU, see :mod:`.spectrum`), and the engine's round-trip check confirms the
reload gives the trained logits.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from adaptlab.backbones.layer_map import LayerMap, modules_under
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import Strategy, StrategyConfig, set_requires_grad
from adaptlab.strategies.registry import register_strategy
from adaptlab.strategies.svfit.layer import (
    PARAMETRIZED,
    attach,
    folded_state_dict,
    shifts,
)
from adaptlab.strategies.svfit.spectrum import decompose, rank_by_energy

# A convolution with groups=1 is one (out, in * kernel) matrix; a grouped or depthwise one is
# a stack of small per-group matrices whose spectra a single SVD would mix, so it is left out
# (its weights stay frozen). Embeddings are lookup tables, not maps of the features: left out.
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TARGET_TYPES = (nn.Linear, *_CONV)


@dataclass
class SvfitConfig(StrategyConfig):
    energy: float = field(default=0.99, metadata={
        "min": 0.01, "max": 1.0,
        "help": "share of each weight's spectral energy (sum of squared singular values) the "
                "trained singular values keep; sets r per matrix when rank=0"})
    rank: int = field(default=0, metadata={
        "min": 0, "max": 65_536,
        "help": "singular values trained per matrix (at most its smaller side); 0 = by energy"})
    train_residual_rank: int = field(default=0, metadata={
        "min": 0, "max": 65_536,
        "help": "also train the next k singular values after the top r (0 = the paper: the "
                "residual spectrum frozen)"})
    targets: str = field(default="auto", metadata={
        "help": "'auto' (every Linear and groups=1 Conv in the backbone's blocks and neck) or "
                "comma-separated module names"})
    save_norms: bool = field(default=True, metadata={
        "help": "train and save BatchNorm layers (their running statistics) with the values"})

    def __post_init__(self) -> None:
        if math.isnan(self.energy):  # NaN passes every bound check
            raise AdaptlabError("strategy 'svfit': energy=nan is not a number in (0, 1]")


def _adaptable(module: nn.Module) -> bool:
    if not isinstance(module, _TARGET_TYPES):
        return False
    if isinstance(module, _CONV) and module.groups != 1:
        return False
    # A weight another parametrization already owns (weight norm) or that is not a plain
    # trainable tensor cannot take a second meaning here.
    return (not parametrize.is_parametrized(module, PARAMETRIZED)
            and isinstance(getattr(module, PARAMETRIZED, None), nn.Parameter))


def derive_targets(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Every adaptable layer inside the backbone's blocks and neck (not the stem, not the
    head), the same places ``lora`` wraps."""
    block_names = [name for block in layer_map.blocks for name in block] + list(layer_map.neck)
    return sorted({name for name, module in modules_under(model, block_names)
                   if _adaptable(module)})


def _batch_norms(model: nn.Module, keep: str | None = None) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not (keep and (name == keep or name.startswith(keep + ".")))]


@register_strategy
class SingularValueFineTuning(Strategy):
    name = "svfit"
    shards = True
    config_class = SvfitConfig
    description = ("SVFit: train the top singular values of each weight (r by spectral "
                   "energy), singular vectors and residual frozen; head and BatchNorm saved")
    # AdamW moves each singular value by about lr per step, and the values it moves are of
    # order 0.5 to 10 (MiniLM's: median 0.5-1.9, largest 2.5-11 per matrix), so the rate is
    # set above the 1e-3 of strategies that move weights of order 0.01. Not tuned further.
    default_lr = 5e-3
    lr_range = (1e-4, 5e-2)

    def __init__(self, config: SvfitConfig) -> None:
        super().__init__(config)
        # The BatchNorm tensors of the model as apply() found it: unadapted() puts them back.
        self._pretrained_norms: dict[str, dict[str, torch.Tensor]] = {}

    def targets(self, model: nn.Module, layer_map: LayerMap) -> list[str]:
        """The layers to adapt (``targets`` option), each checked; refuses an empty set."""
        if self.config.targets == "auto":
            targets = derive_targets(model, layer_map)
        else:
            targets = [t.strip() for t in self.config.targets.split(",") if t.strip()]
            modules = dict(model.named_modules())
            for target in targets:
                if target not in modules:
                    raise AdaptlabError(f"strategy 'svfit': target {target!r} is not a module "
                                        "of this model")
                if not _adaptable(modules[target]):
                    raise AdaptlabError(
                        f"strategy 'svfit': target {target!r} is a "
                        f"{type(modules[target]).__name__}; SVFit adapts Linear and Conv1d/2d/3d "
                        "(groups=1) layers with a plain weight")
        if not targets:
            found = sorted({type(m).__name__ for _, m in modules_under(
                model, [n for block in layer_map.blocks for n in block] + list(layer_map.neck))
                if not list(m.children())})
            raise AdaptlabError("strategy 'svfit': this backbone's blocks hold no Linear or "
                                f"groups=1 Conv layer (they hold {', '.join(found) or 'nothing'})")
        return targets

    def _rank(self, values: torch.Tensor) -> int:
        """Singular values to train for a weight of spectrum ``values`` (0: a zero matrix,
        left as it is)."""
        if float(values[0]) == 0.0:
            return 0
        rank = self.config.rank or rank_by_energy(values, self.config.energy)
        return min(rank + self.config.train_residual_rank, values.numel())

    def ranks(self, model: nn.Module, layer_map: LayerMap) -> dict[str, int]:
        """Singular values trained per target of ``model`` (before :meth:`apply`)."""
        modules = dict(model.named_modules())
        return {name: self._rank(decompose(getattr(modules[name], PARAMETRIZED)).values)
                for name in self.targets(model, layer_map)}

    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        self.targets(model, layer_map)  # refuses a backbone with nothing to adapt

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        modules = dict(model.named_modules())
        for name in self.targets(model, layer_map):
            module = modules[name]
            weight = getattr(module, PARAMETRIZED)
            spectrum = decompose(weight)
            rank = self._rank(spectrum.values)
            if rank:
                attach(module, spectrum.top(rank, like=weight))
        self._pretrained_norms = {
            name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            for name, module in _batch_norms(model)}
        return model

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        set_requires_grad([model], False)
        for _, shift in shifts(model):
            shift.singular_values.requires_grad_(True)
        if self.config.save_norms:
            set_requires_grad([module for _, module in _batch_norms(model)], True)
        if layer_map.head:
            set_requires_grad([model.get_submodule(layer_map.head)], True)

    def load_saved(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                   ignore_mismatched: bool = False) -> None:
        own = model.state_dict()
        for key, tensor in tensors.items():
            if key.endswith(".singular_values") and key in own and own[key].shape != tensor.shape:
                raise AdaptlabError(
                    f"strategy 'svfit': {key} was saved with {tensor.numel()} singular values, "
                    f"this model's SVD keeps {own[key].numel()} (its weights differ from the "
                    "ones the run adapted)")
        super().load_saved(model, tensors, ignore_mismatched)

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        """The pre-trained singular values (and BatchNorm tensors) in place, the head ``keep``
        as trained; everything put back when the context closes."""
        layers = [shift for _, shift in shifts(model)]
        norms = [(name, module) for name, module in _batch_norms(model, keep)
                 if self.config.save_norms]
        if any(name not in self._pretrained_norms for name, _ in norms):
            yield None  # not applied by this strategy object: the caller builds a fresh model
            return
        trained = {name: {k: v.clone() for k, v in module.state_dict().items()}
                   for name, module in norms}
        for shift in layers:
            shift.enabled = False
        for name, module in norms:
            module.load_state_dict(self._pretrained_norms[name])
        try:
            yield model
        finally:
            for shift in layers:
                shift.enabled = True
            for name, module in norms:
                module.load_state_dict(trained[name])

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every adapted weight folded back: the plain task model's state dict."""
        return folded_state_dict(model)
