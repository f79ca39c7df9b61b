"""The shared part of every strategy: its lifecycle, with small override points (after
Lightning's ``BaseFinetuning``).

A strategy, once per model it adapts:

1. ``apply`` gives a freshly built task model its structure (peft wrappers, prompt tokens, a
   side network); the same call serves a new run and every reload (explain, the round-trip
   check, ``load_run``, soups), so a reloaded run always has the structure it was trained with;
2. ``select_trainable`` sets what trains at the start of a new run;
3. ``declared_names`` lists the tensors that define the adapted model, saved in every
   checkpoint, the best-epoch weights and the final weights whether or not they train at that
   moment (a dynamic strategy that freezes a unit must not lose it);
4. ``param_groups`` builds the optimizer (every parameter that may ever train, so one unfrozen
   later reaches it; the engine drops the state of a parameter when it is frozen);
5. ``tensor_state`` keeps tensors (scores, masks, running averages) in the checkpoint as
   safetensors, beside the JSON ``state_dict``;
6. ``callbacks`` hook the engine at fit, epoch, backward and optimizer-step boundaries.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from adaptlab.backbones.layer_map import NORM_TYPES, LayerMap
from adaptlab.errors import AdaptlabError
from adaptlab.schema import from_dict

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from adaptlab.costs.step_rates import StepRates

WEIGHTS_FILE = "weights.safetensors"

# The rate a new task head trains at by default: head-only's own default. Every strategy that
# trains more than the head keeps the head at no less than this (``head_lr_scale`` unset):
# at full fine-tuning's 1e-4 a random head barely moves in a short run and its noisy
# gradient is all the backbone learns from; the every-strategy benchmarks lost 5-44 points
# to head-only that way (bench/strategies.py --every), LP-FT's observation (Kumar et al. 2022).
NEW_HEAD_LR = 3e-3


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A run's weights file; a damaged or foreign one (a pickle renamed) is named."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OS errors alike
        raise AdaptlabError(f"{path}: not a readable safetensors file ({exc})") from exc


@dataclass
class StrategyConfig:
    """Options every strategy shares: the shape of the new task head."""

    head: str = field(default="linear", metadata={
        "choices": ("linear", "mlp"), "help": "new classification head: Linear or a small MLP"})
    head_hidden: int = field(default=256, metadata={"min": 1, "max": 65_536,
                                                    "help": "MLP head hidden width"})
    head_dropout: float = field(default=0.2, metadata={"min": 0.0, "max": 0.95})
    head_init: str = field(default="random", metadata={
        "choices": ("random", "prototypes"),
        "help": "a new linear classification head starts random, or at the class prototypes "
                "of the features it reads (step 0 is the nearest-class-mean classifier: helps "
                "a pre-trained backbone on little data, hurts one that starts untrained)"})
    layer_decay: float = field(default=1.0, metadata={
        "min": 0.05, "max": 1.0,
        "help": "layer-wise learning-rate decay: the top block trains at lr, each block below "
                "at lr * layer_decay**depth, the embeddings lowest, neck and head at lr "
                "(1 = off; AutoGluon uses 0.9)"})
    head_lr_scale: float | None = field(default=None, metadata={
        "min": 0.01, "max": 1000.0,
        "help": "the new task head trains at lr * head_lr_scale; unset: at no less than "
                "head-only's rate (3e-3) where more than the head trains (a new head starts "
                "from nothing; the pre-trained part, or an adapter's small update, needs "
                "less), at lr where the head is pre-trained (a forecaster's, or a source "
                "run's for the same classes)"})
    norm_stats: str = field(default="auto", metadata={
        "choices": ("auto", "keep", "update"),
        "help": "a BatchNorm layer whose weights train keeps normalising by its running "
                "statistics while its scale and shift train (keep), or normalises by each "
                "batch's and updates its running ones (update); auto keeps the statistics a "
                "layer starts with learned (a pre-trained backbone's, a source run's) and "
                "updates those still at their initial values (a layer trained from scratch)"})
    reinit_top: int = field(default=0, metadata={
        "min": 0, "max": 10_000, "bound": "num_blocks",
        "help": "re-initialise the top N blocks before training, seeded by the run's seed "
                "(they must train: their new weights are saved)"})


def norms_to_keep(model: nn.Module, norm_stats: str) -> list[str]:
    """The BatchNorm layers whose running statistics a run with ``norm_stats`` keeps (see
    :class:`StrategyConfig`), decided once on the model the run starts from. Keeping is the
    default for learned statistics because the batches of a small new dataset give noisy
    ones, and the running statistics they drag along stop matching what the layers after
    them learned (on the medical demo LoRA lost 6 points to it, 0.552 against 0.613); a layer
    still at its initial statistics has nothing to keep."""
    if norm_stats == "update":
        return []
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and module.running_mean is not None
            and (norm_stats == "keep" or has_learned_statistics(module))]


def has_learned_statistics(norm: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether the layer's running statistics moved from their initial zeros and ones."""
    return not (bool(torch.all(norm.running_mean == 0)) and bool(torch.all(norm.running_var == 1)))


def keep_batch_norm_statistics(model: nn.Module, names) -> None:
    """The BatchNorm layers ``names`` in eval mode: they normalise by their running
    statistics and leave them as they are, while their scale and shift may still train."""
    names = set(names)
    for name, module in model.named_modules():
        if name in names:
            module.eval()


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


def decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float,
                 prefix: str = "") -> list[dict[str, Any]]:
    """Decay weights, not biases or norm parameters (1-D tensors); empty groups left out."""
    decay = [(n, p) for n, p in named if p.ndim > 1]
    no_decay = [(n, p) for n, p in named if p.ndim <= 1]
    groups = [{"name": f"{prefix}decay", "params": decay, "weight_decay": weight_decay},
              {"name": f"{prefix}no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Strategy:
    """Base class. Subclasses set ``name`` and ``config_class`` and override
    ``select_trainable`` (which parameters train) and, when they change the model's structure,
    ``apply``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    description: ClassVar[str] = ""
    # True where the adaptation cannot be folded into the base model's weights (a side
    # network): an export then holds the adapted model's own state, rebuilt with apply().
    keeps_structure: ClassVar[bool] = False
    # True where what trains changes from step to step (SlimFit): several processes then
    # average gradients by hand, as DistributedDataParallel fixes its parameters once.
    changes_trainable_set: ClassVar[bool] = False
    # True where the strategy's weights may be sharded over processes (``fsdp``): it keeps
    # one trainable set, reads and writes its tensors by the model's own state-dict names,
    # and no hook of it reads a weight while training.
    shards: ClassVar[bool] = False
    # The learning rate an unset ``lr`` means for this strategy, and the range outside which
    # a run is warned (allowed: the range is where the literature and our demos found it
    # works). Subclasses set their own; these are the engine's old single default.
    default_lr: ClassVar[float] = 1e-3
    lr_range: ClassVar[tuple[float, float]] = (1e-5, 1e-1)
    # Options added after runs were recorded, each with the value a run recorded without it
    # trained with (its structure, its weights' keys, how its layers trained): read back, such
    # a run rebuilds and resumes as it ran, not at today's default
    # (:func:`registry.recorded_strategy_options`).
    options_before: ClassVar[dict[str, Any]] = {"norm_stats": "update"}  # before 2026-12-05

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self._declared: list[str] | None = None
        self._candidates: list[str] | None = None
        self._layer_map: LayerMap | None = None  # the map param_groups places parameters by
        self._kept_norms: list[str] | None = None  # BatchNorm layers in eval mode (norm_stats)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Strategy:
        return cls(cls._checked_config(options))

    @classmethod
    def _checked_config(cls, options: dict[str, Any]) -> StrategyConfig:
        return from_dict(cls.config_class, dict(options), owner=f"strategy {cls.name!r}")

    @classmethod
    def resolved_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Every option of ``config_class``: those given, checked and typed (``--set`` hands
        over text), the others at today's default, as plain JSON values. A run records this,
        so a replay or a resume after a default changed trains what the run trained, and an
        option given as its default is the same run as one left unset.

        An option whose value is decided against the backbone when the model is built (peft
        ``targets="auto"``, a negative freeze ``k``, SVFit's ``rank=0``) is recorded as
        declared; the backbone of the run resolves it again the same way.
        """
        import json

        return json.loads(json.dumps(asdict(cls._checked_config(options))))

    @classmethod
    def option_names(cls) -> set[str]:
        from dataclasses import fields

        return {f.name for f in fields(cls.config_class)}

    # -- override points -------------------------------------------------------------------
    def check(self, layer_map: LayerMap) -> None:
        """Refuse options that do not fit this backbone (raise AdaptlabError)."""

    def check_model(self, model: nn.Module, layer_map: LayerMap) -> None:
        """Refuse a backbone whose modules this strategy cannot adapt (raise AdaptlabError),
        from a task model built for the check only, before the run folder exists; must not
        change ``model``, whose backbone the run goes on to use."""

    def apply(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        """Give a freshly built model this strategy's structure; return the model to use.

        Called for a new run and for every reload, so it must not depend on training."""
        return model

    def select_trainable(self, model: nn.Module, layer_map: LayerMap) -> None:
        """Set ``requires_grad`` for the start of a new run (after :meth:`apply`)."""
        raise NotImplementedError

    def trainable_candidates(self, model: nn.Module, layer_map: LayerMap) -> list[str]:
        """Names of every parameter that may train at some point of the run. Default: those
        trainable after :meth:`select_trainable`; a strategy that unfreezes later adds the
        ones it will unfreeze."""
        return [name for name, p in model.named_parameters() if p.requires_grad]

    def planned_trainable_sets(self, model: nn.Module, layer_map: LayerMap,
                               rates: StepRates) -> list[list[str]] | None:
        """The parameter names each optimizer step of the run will train, one list per step of
        ``rates`` (the rate every parameter steps with, step by step), for the memory planner
        (:mod:`adaptlab.costs.planner`), called after :meth:`setup` on a model holding the
        run's starting weights; None means: the set after setup, at every step. A strategy
        whose trainable set changes during the run predicts it here; the planner counts each
        set the steps reach, as the cost meter keeps the peak over the steps taken."""
        return None

    def init_from_data(self, model: nn.Module, layer_map: LayerMap, batches: Iterable,
                       loss: Callable, device) -> dict[str, Any] | None:
        """A new run's start taken from its training data, after :meth:`setup` and the
        head's start (LST's Fisher pruning): ``batches`` yields ``(inputs, labels)`` of the
        training split unshuffled and unaugmented, ``loss(outputs, labels)`` is the task's.
        Returns facts for the run's events, or None where it does nothing. Reloads never call
        it, so what it sets must be saved state (weights); a resumed run's checkpoint replaces
        it."""
        return None

    def train_mode(self, model: nn.Module) -> None:
        """Called after ``model.train()``: frozen norm layers keep their running statistics."""
        for module in model.modules():
            if isinstance(module, NORM_TYPES):
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        keep_batch_norm_statistics(model, self._kept_norms or ())

    def callbacks(self) -> list:
        """Engine callbacks (:class:`adaptlab.engine.callbacks.EngineCallback`)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """JSON-able strategy state stored in each checkpoint."""
        return {"name": self.name, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (freezing state must survive resume)."""

    def tensor_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the strategy's own (scores, masks, averages), checkpointed as
        safetensors; ``{}`` for strategies without any."""
        return {}

    def load_tensor_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`tensor_state` saved."""
        if tensors:
            raise AdaptlabError(f"strategy {self.name!r} keeps no tensor state, the checkpoint "
                                f"holds {sorted(tensors)[:3]}")

    @contextlib.contextmanager
    def unadapted(self, model: nn.Module, keep: str | None):
        """The model with this strategy's adaptation switched off in place, keeping the module
        ``keep`` (the task head) as trained; yields None when that cannot be done in place
        (the caller then builds a fresh model)."""
        yield None

    # -- the lifecycle the engine and the loaders call ---------------------------------------
    def setup(self, model: nn.Module, layer_map: LayerMap) -> nn.Module:
        """A new run: :meth:`apply`, the shared ``reinit_top`` re-initialisation,
        :meth:`select_trainable`, then record what is declared."""
        model = self.apply(model, layer_map)
        self._layer_map = layer_map
        reinitialised = self._reinitialise_top(model, layer_map)
        # After the re-initialisation: a re-drawn block's statistics start over.
        self._kept_norms = norms_to_keep(model, self.config.norm_stats)
        self.select_trainable(model, layer_map)
        self._candidates = list(self.trainable_candidates(model, layer_map))
        self._declared = self.declared_names(model, layer_map)
        lost = sorted(set(reinitialised) - set(self._candidates) - set(self._declared))
        if lost:
            raise AdaptlabError(
                f"strategy {self.name!r}: reinit_top={self.config.reinit_top} needs the "
                f"re-initialised blocks trained and saved, and this strategy leaves {lost[0]!r} "
                "frozen; use full, llrd or freeze with the top blocks trainable")
        return model

    def _reinitialise_top(self, model: nn.Module, layer_map: LayerMap) -> list[str]:
        k = getattr(self.config, "reinit_top", 0)
        if not k:
            return []
        from adaptlab.strategies.reinit import reinitialise_top_blocks

        # torch.initial_seed() is the seed the run set (seed_everything): the same run seed
        # draws the same new weights, whatever the RNG has drawn since.
        return reinitialise_top_blocks(model, layer_map, k, torch.initial_seed())

    def check_shared_options(self, model: nn.Module, layer_map: LayerMap) -> None:
        """Refuse ``layer_decay`` / ``reinit_top`` values this backbone and strategy cannot
        honour, before the run folder exists; ``model`` is left as it is (a reinit is tried
        on a copy)."""
        k = getattr(self.config, "reinit_top", 0)
        if not k:
            return
        if k > layer_map.num_blocks:
            raise AdaptlabError(f"reinit_top={k} is out of range for a backbone with "
                                f"{layer_map.num_blocks} blocks (use 0..{layer_map.num_blocks})")
        import copy

        with torch.random.fork_rng(devices=[]):
            type(self)(self.config).setup(copy.deepcopy(model), layer_map)

    def candidates(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every parameter that may train (after :meth:`setup`)."""
        if self._candidates is None:
            raise RuntimeError(f"strategy {self.name!r}: setup() has not run")
        params = dict(model.named_parameters())
        return [(name, params[name]) for name in self._candidates]

    def declared_names(self, model: nn.Module, layer_map: LayerMap) -> list[str]:
        """State-dict keys that define the adapted model: every parameter that may train and
        the persistent buffers of the modules that own them (a BatchNorm's statistics)."""
        names = list(self._candidates or [])
        owners = {name.rsplit(".", 1)[0] if "." in name else "" for name in names}
        for module_name, module in model.named_modules():
            own_params = [n for n, _ in module.named_parameters(recurse=False)]
            if own_params and module_name not in owners:
                continue
            for buffer_name, _ in module.named_buffers(recurse=False):
                if buffer_name in module._non_persistent_buffers_set:
                    continue  # not part of a state dict (e.g. position ids): nothing to restore
                names.append(f"{module_name}.{buffer_name}" if module_name else buffer_name)
        return names

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """The optimizer's groups, each ``{"name", "params": [(name, parameter)],
        "weight_decay", optional "lr", "lr_scale" or "lr_floor"}`` over :meth:`candidates`;
        with ``layer_decay`` below 1, one pair of groups per depth in the layer map
        (:mod:`adaptlab.strategies.layer_rates`); the task head's parameters in their own
        pair at ``lr * head_lr_scale``, or, with it unset, at no less than
        :data:`NEW_HEAD_LR` (``lr_floor``) where something besides a new head trains."""
        decay = getattr(self.config, "layer_decay", 1.0)
        head_scale = getattr(self.config, "head_lr_scale", None)
        named = self.candidates(model)
        head: list[tuple[str, nn.Parameter]] = []
        head_entry = self._layer_map.head if self._layer_map is not None else None
        if head_entry and head_scale != 1.0:
            from adaptlab.strategies.layer_rates import under_entry

            head = [(n, p) for n, p in named if under_entry(n, head_entry)]
            rest = [(n, p) for n, p in named if not under_entry(n, head_entry)]
            # The floor is for a new head beside something else that trains: head-only's
            # rate is the run's own, and a forecaster's head or one a source run trained on
            # the same classes (init_from) is no new head.
            if head_scale is None and (not rest or getattr(model, "head_is_pretrained", False)):
                head = []
            else:
                named = rest
        if decay == 1.0 or self._layer_map is None:
            groups = decay_groups(named, weight_decay)
        else:
            from adaptlab.strategies.layer_rates import layer_decay_groups

            groups = layer_decay_groups(named, self._layer_map, decay, weight_decay)
        rate = {"lr_floor": NEW_HEAD_LR} if head_scale is None else {"lr_scale": head_scale}
        return groups + [{**group, **rate}
                         for group in decay_groups(head, weight_decay, prefix="head_")]

    # -- weights ---------------------------------------------------------------------------
    def saved_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The declared tensors, trainable at this moment or not."""
        if self._declared is None:
            raise RuntimeError(f"strategy {self.name!r}: setup() has not run")
        state = model.state_dict(keep_vars=True)
        return {name: state[name].detach().contiguous() for name in self._declared}

    def load_saved(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                   ignore_mismatched: bool = False) -> None:
        """Put tensors saved by :meth:`saved_tensors` back (resume, best epoch, reload);
        ``ignore_mismatched`` skips tensors of another shape (a source run's head for other
        classes)."""
        own = model.state_dict()
        if ignore_mismatched:
            tensors = {k: v for k, v in tensors.items()
                       if k not in own or own[k].shape == v.shape}
        # load_state_dict reports other shapes as a RuntimeError listing every tensor.
        for key, tensor in tensors.items():
            if key in own and own[key].shape != tensor.shape:
                raise AdaptlabError(f"strategy {self.name!r}: saved tensor {key!r} has shape "
                                    f"{tuple(tensor.shape)}, this model's {tuple(own[key].shape)} "
                                    "(saved for another model, data or version)")
        result = model.load_state_dict(tensors, strict=False)
        if result.unexpected_keys:
            raise AdaptlabError(f"strategy {self.name!r}: saved tensors this model lacks, e.g. "
                                f"{result.unexpected_keys[0]!r}")

    def save_final(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        """Write the adapted weights into the run folder; return facts for ``costs.json``."""
        from safetensors.torch import save_file

        from adaptlab.engine.atomic import atomic_write_with

        path = out_dir / WEIGHTS_FILE
        tensors = {k: v.cpu() for k, v in self.saved_tensors(model).items()}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp)))
        return {"weights_file": path.name, "weights_bytes": path.stat().st_size}

    def final_tensors(self, run_dir: Path) -> dict[str, torch.Tensor]:
        """What :meth:`save_final` wrote, read back."""
        path = Path(run_dir) / WEIGHTS_FILE
        if not path.is_file():
            raise AdaptlabError(f"{run_dir} holds no weights ({WEIGHTS_FILE} missing)")
        return read_safetensors(path)

    def load_final(self, model: nn.Module, run_dir: Path) -> None:
        """Load what :meth:`save_final` wrote into a model :meth:`apply` has prepared."""
        tensors = self.final_tensors(run_dir)
        try:
            self.load_saved(model, tensors)
        except AdaptlabError as exc:
            raise AdaptlabError(f"{Path(run_dir) / WEIGHTS_FILE}: {exc}") from exc

    def merged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapted model as a plain state dict of the base task model (what ``init_from``
        copies into another run): structural strategies fold their parts back in."""
        return {k: v.detach() for k, v in model.state_dict().items()}
