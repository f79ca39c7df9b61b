"""AdaLoRA through peft: SVD-shaped adapters ``B diag(E) A`` whose ranks are reallocated
while training, keeping the singular triplets whose smoothed sensitivity ``|w * grad|`` is
highest until the budget falls from ``r`` to ``target_r`` per layer (cubic schedule).

The schedule is peft's ``RankAllocator``; an engine callback drives it once per optimizer
step. peft's loop calls ``update_and_allocate`` after ``optimizer.step()`` and before
``zero_grad()``; our engine clears gradients before its step-end hook, so the step is split
in two: the sensitivities are updated from the gradients just before the optimizer steps, the
triplets are masked just after it (so a masked singular value stays exactly zero in the saved
weights). A sharded model (``fsdp=true``) is ranked on its whole adapter tensors, gathered.
peft adds AdaLoRA's orthogonality penalty only to a Hugging Face output's ``loss``; our task
models return logits, so the callback back-propagates the penalty itself.

The rank state (the allocator's sensitivities and the rank pattern) is checkpointed, so a
resumed run allocates as one that never stopped; the final adapter is saved in peft's compact
form (each layer cut to its kept ranks, the rank pattern in the adapter config), and a reload
resizes the layers to it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.engine.callbacks import EngineCallback, HookContext
from adaptlab.engine.sharding import gathered, is_sharded, like
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig, held_warnings
from adaptlab.strategies.registry import register_strategy

_SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")


@dataclass
class AdaloraStrategyConfig(PeftStrategyConfig):
    r: int = field(default=12, metadata={"min": 1, "max": 1024,
                                         "help": "initial rank of every adapter"})
    target_r: int = field(default=8, metadata={"min": 0, "max": 1024,
                                               "help": "average rank per adapter at the end"})
    alpha: float = field(default=16.0, metadata={"min": 1e-6, "max": 1e6,
                                                  "help": "scaling numerator (alpha / r)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95})
    warmup_fraction: float = field(default=0.1, metadata={
        "min": 0.0, "max": 0.9, "help": "share of the optimizer steps before ranks are cut"})
    final_fraction: float = field(default=0.2, metadata={
        "min": 0.0, "max": 0.9, "help": "share of the steps trained at the final ranks"})
    delta_t: int = field(default=1, metadata={"min": 1, "max": 100_000,
                                              "help": "optimizer steps between allocations"})
    orth_reg_weight: float = field(default=0.5, metadata={
        "min": 0.0, "max": 100.0, "help": "weight of the orthogonality penalty on A and B"})


def schedule(total_steps: int, warmup_fraction: float, final_fraction: float
             ) -> tuple[int, int]:
    """(tinit, tfinal) in optimizer steps, leaving at least one budgeting step."""
    tfinal = min(int(final_fraction * total_steps), max(total_steps - 1, 0))
    tinit = min(int(warmup_fraction * total_steps), max(total_steps - tfinal - 1, 0))
    return tinit, tfinal


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """Mean over AdaLoRA's A and B of ``||P P^T - I||_F`` (rows of A, columns of B), the
    penalty peft adds to a Hugging Face output's loss."""
    terms = []
    for name, param in model.named_parameters():
        if param.requires_grad and ("lora_A" in name or "lora_B" in name):
            param = gathered(param)  # a sharded A or B: its Gram matrix needs all of it
            gram = param @ param.T if "lora_A" in name else param.T @ param
            eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
            terms.append(torch.linalg.matrix_norm(gram - eye))
    return torch.stack(terms).mean() if terms else torch.zeros(())


class WholeAdapters:
    """A sharded model's AdaLoRA tensors, whole, for peft's allocator: ranked on each
    process's slices, every process would keep other triplets. Gathered with their gradients
    in the same order everywhere, they rank alike everywhere; the singular values the
    allocator masks go back to each process's slice (``write_back``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tensors: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():
            if "lora_" in name:
                whole = gathered(param.detach())
                if param.grad is not None:
                    whole.grad = gathered(param.grad)
                self.tensors[name] = whole

    def named_parameters(self):
        return iter(self.tensors.items())

    def write_back(self) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if "lora_E" in name:
                    param.copy_(like(param, self.tensors[name]))


class _Allocate(EngineCallback):
    def __init__(self, strategy: AdaloraStrategy) -> None:
        self.strategy = strategy

    def on_fit_start(self, ctx: HookContext) -> None:
        self.strategy.set_total_steps(ctx.trainer.steps_per_epoch * ctx.trainer.settings.epochs)

    def on_after_backward(self, ctx: HookContext) -> None:
        weight = self.strategy.config.orth_reg_weight
        if weight > 0:
            # accelerator.backward divides by the accumulation steps, as it does the loss.
            ctx.trainer.accelerator.backward(weight * orthogonality_penalty(ctx.model))

    def on_before_optimizer_step(self, ctx: HookContext) -> None:
        self.strategy.update_sensitivity()

    def on_step_end(self, ctx: HookContext) -> None:
        self.strategy.allocate()


@register_strategy
class AdaloraStrategy(PeftStrategy):
    name = "adalora"
    config_class = AdaloraStrategyConfig
    description = ("AdaLoRA (peft): SVD-shaped adapters whose ranks are reallocated to the "
                   "layers that matter while training")
    # peft 0.21's AdaLoRA dispatch: Linear, Conv2d (and transformers' Conv1D).
    layer_types = (nn.Linear, nn.Conv2d)
    shards = True
    default_lr = 1e-3  # the AdaLoRA paper's GLUE rates are 5e-4 .. 1.2e-3
    lr_range = (1e-5, 5e-2)

    def __init__(self, config: AdaloraStrategyConfig) -> None:
        super().__init__(config)
        self.model: nn.Module | None = None
        self.optimizer_steps = 0  # allocations done (peft counts its steps from 0)
        self._stepped = False

    def check(self, layer_map) -> None:
        if self.config.target_r > self.config.r:
            raise AdaptlabError(f"strategy 'adalora': target_r={self.config.target_r} exceeds "
                                f"r={self.config.r} (ranks are only cut)")

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import AdaLoraConfig

        # peft wants the step count when the config is built; the engine tells it at fit start
        # (set_total_steps). A reload never allocates, so one step stands in until then.
        return AdaLoraConfig(init_r=self.config.r, target_r=self.config.target_r,
                             lora_alpha=self.config.alpha, lora_dropout=self.config.dropout,
                             tinit=0, tfinal=0, total_step=1, deltaT=self.config.delta_t,
                             orth_reg_weight=self.config.orth_reg_weight,
                             target_modules=plan["target_modules"],
                             modules_to_save=plan["modules_to_save"])

    def apply(self, model: nn.Module, layer_map) -> nn.Module:
        applied = super().apply(model, layer_map)
        if self.model is None:  # the trained model; a reload's apply builds another
            self.model = applied
        return applied

    def callbacks(self) -> list:
        return [_Allocate(self)]

    # -- the allocation, split around the optimizer step --------------------------------------
    @property
    def _allocator(self):
        if self.model is None:
            raise RuntimeError("strategy 'adalora': apply() has not run")
        return self.model.base_model.rankallocator

    @property
    def _config(self):
        return self._allocator.peft_config

    def set_total_steps(self, total_steps: int) -> None:
        tinit, tfinal = schedule(total_steps, self.config.warmup_fraction,
                                 self.config.final_fraction)
        self._config.total_step, self._config.tinit, self._config.tfinal = (
            total_steps, tinit, tfinal)

    def update_sensitivity(self) -> None:
        """Before the optimizer step: smooth the sensitivities with this step's gradients."""
        config = self._config
        if self.optimizer_steps < config.total_step - config.tfinal:
            inner = self.model.base_model.model
            self._allocator.update_ipt(WholeAdapters(inner) if is_sharded(inner) else inner)
        self._stepped = True

    def allocate(self) -> None:
        """After the optimizer step: mask the triplets the budget drops (peft's
        ``update_and_allocate`` without its sensitivity update)."""
        if not self._stepped:
            return  # a micro-batch that accumulated without stepping
        self._stepped = False
        step, config, allocator = self.optimizer_steps, self._config, self._allocator
        self.optimizer_steps += 1
        final_step = config.total_step - config.tfinal
        budget, scheduled = allocator.budget_schedule(step)
        reallocate = step == final_step or (step < final_step and scheduled)
        if not reallocate and not (step > final_step and config.rank_pattern):
            return
        inner = self.model.base_model.model
        # Gathering is collective: every process reaches here at the same steps.
        view = WholeAdapters(inner) if is_sharded(inner) else inner
        if reallocate:
            config.rank_pattern = allocator.mask_to_budget(view, budget)
        else:
            allocator.mask_using_rank_pattern(view, config.rank_pattern)
        if step == final_step:
            allocator.reset_ipt()
        if view is not inner:
            view.write_back()

    def ranks(self) -> dict[str, int]:
        """The kept rank of each adapted layer (its initial rank before any allocation)."""
        pattern = self._config.rank_pattern
        if not pattern:
            return {}
        return {name.split(".lora_E")[0]: int(sum(kept)) for name, kept in pattern.items()}

    def _saved_quietly(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        """peft's compact adapter, saved. A layer AdaLoRA cut to no kept rank holds a
        ``lora_A`` of shape ``(0, in)`` and a ``lora_B`` of ``(out, 0)``, which peft's save
        takes for shards that were never gathered (ZeRO-3, FSDP) and warns of; a sharded
        run's adapter is gathered before it is saved. That warning is kept out of the user's
        log only when the saved file shows every such tensor empty along its rank and nothing
        else."""
        from peft.utils.warning import PeftWarning

        with held_warnings() as caught:
            saved = PeftStrategy.save_final(self, model, out_dir)
            empty = [(name, tuple(tensor.shape))
                     for name, tensor in self.final_tensors(out_dir).items()
                     if (".lora_A" in name or ".lora_B" in name)
                     and (tensor.dim() < 2 or 0 in tensor.shape)]
            only_emptied_ranks = all(
                len(shape) == 2 and ((".lora_A" in name and shape[0] == 0 < shape[1])
                                     or (".lora_B" in name and shape[1] == 0 < shape[0]))
                for name, shape in empty)
            if only_emptied_ranks:
                caught[:] = [w for w in caught if not (issubclass(w.category, PeftWarning)
                                                       and "have invalid shape" in str(w.message))]
        return saved

    # -- state that must survive a resume --------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        pattern = self._config.rank_pattern if self.model is not None else None
        return {**super().state_dict(), "optimizer_steps": self.optimizer_steps,
                "rank_pattern": pattern}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self._config.rank_pattern = state.get("rank_pattern")

    def tensor_state(self) -> dict[str, torch.Tensor]:
        allocator = self._allocator
        return {f"{kind}/{name}": tensor.detach().cpu().contiguous()
                for kind in _SCORES for name, tensor in getattr(allocator, kind).items()}

    def load_tensor_state(self, tensors: dict[str, torch.Tensor]) -> None:
        allocator = self._allocator
        device = next(self.model.parameters()).device
        allocator.reset_ipt()
        for key, tensor in tensors.items():
            kind, _, name = key.partition("/")
            if kind not in _SCORES:
                raise AdaptlabError(f"strategy 'adalora': unknown tensor state {key!r}")
            getattr(allocator, kind)[name] = tensor.to(device)

    # -- weights: full-size in checkpoints, cut to the kept ranks in the final adapter -------
    def _without_rank_pattern(self, model: nn.Module):
        """peft cuts saved and loaded tensors to the rank pattern; a checkpoint keeps the
        layers at full size (the masked triplets are zero), so the optimizer's state fits."""
        import contextlib

        @contextlib.contextmanager
        def suspended():
            config = model.peft_config["default"]
            pattern, config.rank_pattern = config.rank_pattern, None
            try:
                yield
            finally:
                config.rank_pattern = pattern

        return suspended()

    def saved_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        with self._without_rank_pattern(model):
            return super().saved_tensors(model)

    def load_saved(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                   ignore_mismatched: bool = False) -> None:
        with self._without_rank_pattern(model):
            super().load_saved(model, tensors, ignore_mismatched)

    def save_final(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        config = model.peft_config["default"]
        trained = self._config if self.model is not None else config
        if trained is not config:  # a sharded run's model gathered whole: a fresh adapter
            for key in ("rank_pattern", "total_step", "tinit", "tfinal"):
                setattr(config, key, copy.deepcopy(getattr(trained, key)))
        if config.rank_pattern:
            # The weights may be an earlier epoch's (the best one restored), cut to other
            # ranks than the allocator's last pattern: keep what these weights hold.
            # (the pattern names lora_E inside the wrapped model, without peft's prefix)
            values = {name.removeprefix("base_model.model."): value
                      for name, value in model.named_parameters()}
            config.rank_pattern = {name: (values[name].detach().view(-1) != 0).tolist()
                                   if name in values else kept
                                   for name, kept in config.rank_pattern.items()}
        pattern = dict(config.rank_pattern) if config.rank_pattern else None
        try:
            return self._saved_quietly(model, out_dir)
        finally:
            config.rank_pattern = pattern  # peft renames the pattern's keys while saving

    def load_final(self, model: nn.Module, run_dir: Path) -> None:
        """The saved adapter's layers are cut to their kept ranks (peft's compact form, which
        peft alone loads by resizing the layers). Here they go back to full size, the dropped
        triplets zero, as the trained model held them: resized layers compute the same values
        in another summation order, a few 1e-5 apart after a deep network."""
        pattern = self.saved_adapter_config(run_dir).get("rank_pattern")
        tensors = self.final_tensors(run_dir)
        if pattern:
            tensors = expand_to_full_rank(tensors, pattern)
        self.load_saved(model, tensors)
        model.peft_config["default"].rank_pattern = pattern


def expand_to_full_rank(tensors: dict[str, torch.Tensor],
                        pattern: dict[str, list[bool]]) -> dict[str, torch.Tensor]:
    """peft's compact AdaLoRA tensors (``base_model.model.<layer>.lora_{A,B,E}``, only the
    kept triplets) put back at their ranks in full-size tensors, zero elsewhere."""
    out = dict(tensors)
    for name, kept in pattern.items():
        layer = name.split(".lora_E")[0]
        mask = torch.tensor(kept, dtype=torch.bool)
        for part in ("lora_A", "lora_E", "lora_B"):
            key = f"base_model.model.{layer}.{part}"
            if key not in tensors:
                raise AdaptlabError(f"strategy 'adalora': the saved adapter lacks {key!r}")
            saved = tensors[key]
            if part == "lora_B":
                full = saved.new_zeros(saved.shape[0], len(kept))
                full[:, mask] = saved
            else:
                full = saved.new_zeros(len(kept), *saved.shape[1:])
                full[mask] = saved
            out[key] = full
    return out
