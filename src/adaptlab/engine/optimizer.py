"""The optimizer and its schedule, built from a strategy's declared parameter groups, with the
controls dynamic strategies need: add parameters mid-run, drop the state of frozen ones, set a
group's learning rate. Everything it changes is recorded by parameter name, so a checkpoint
rebuilds the same groups before loading the state.

AdamW skips a parameter whose ``.grad`` is None, so a declared parameter that is frozen now
costs no optimizer memory until it first trains; when it is frozen again its state is dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adaptlab.costs.meter import optimizer_state_bytes
from adaptlab.engine.schedule import warmup_schedule
from adaptlab.errors import AdaptlabError


class OptimizerControl:
    """AdamW + a warm-up schedule over named parameter groups."""

    def __init__(self, model: nn.Module, groups: list[dict[str, Any]], lr: float,
                 schedule: str, total_steps: int, warmup_steps: int) -> None:
        self.model = model
        self.base_lr = lr
        self._names: dict[int, str] = {}
        torch_groups = [self._torch_group(group) for group in groups]
        if not torch_groups:
            raise AdaptlabError("the strategy declares no parameter to train")
        self.optimizer = torch.optim.AdamW(torch_groups, lr=lr)
        self.scheduler = warmup_schedule(self.optimizer, schedule, total_steps, warmup_steps)
        self.stepper = self.optimizer  # replaced by Accelerate's wrapper once prepared
        self.added: list[dict[str, Any]] = []  # groups added after construction, by name

    def _torch_group(self, group: dict[str, Any]) -> dict[str, Any]:
        named = list(group["params"])
        for name, param in named:
            if id(param) in self._names:
                raise AdaptlabError(f"parameter {name!r} is in two optimizer groups")
            self._names[id(param)] = name
        lr = group.get("lr", max(self.base_lr * group.get("lr_scale", 1.0),
                                 group.get("lr_floor", 0.0)))
        return {"params": [p for _, p in named], "weight_decay": group.get("weight_decay", 0.0),
                "lr": lr, "name": group["name"]}

    # -- what strategies call ------------------------------------------------------------------
    def add_parameters(self, named: list[tuple[str, nn.Parameter]], group: str,
                       lr: float | None = None, weight_decay: float = 0.0) -> None:
        """A new group of parameters (a structure grown mid-run); follows the schedule."""
        if any(g["name"] == group for g in self.optimizer.param_groups):
            raise AdaptlabError(f"optimizer group {group!r} exists already")
        lr = self.base_lr if lr is None else lr
        spec = {"name": group, "params": named, "lr": lr, "weight_decay": weight_decay}
        torch_group = self._torch_group(spec)
        self.optimizer.add_param_group(torch_group)
        # LambdaLR keeps one base rate and one factor per group: extend both so the new group
        # follows the same warm-up and decay from where the schedule is now.
        scheduler = self.scheduler
        torch_group["initial_lr"] = lr
        scheduler.base_lrs.append(lr)
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        torch_group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        self.added.append({"name": group, "params": [n for n, _ in named], "lr": lr,
                           "weight_decay": weight_decay})

    def set_group_lr(self, group: str, lr: float) -> None:
        """The base learning rate of ``group`` (the schedule's factor still applies)."""
        index = self._group_index(group)
        torch_group = self.optimizer.param_groups[index]
        factor = self.scheduler.lr_lambdas[index](self.scheduler.last_epoch)
        torch_group["initial_lr"] = lr
        self.scheduler.base_lrs[index] = lr
        torch_group["lr"] = lr * factor

    def group_lr(self, group: str) -> float:
        """The rate ``group`` steps with now."""
        return self.optimizer.param_groups[self._group_index(group)]["lr"]

    def drop_state(self, params) -> int:
        """Forget the optimizer state (moments, step count) of ``params``; returns how many
        had state."""
        dropped = 0
        for param in params:
            if self.optimizer.state.pop(param, None) is not None:
                dropped += 1
        return dropped

    def drop_frozen(self) -> int:
        """Frozen parameters get no step and keep no state: clear their gradients and state."""
        frozen = [p for p in self.parameters() if not p.requires_grad]
        for param in frozen:
            param.grad = None
        return self.drop_state(frozen)

    # -- what the engine reads -------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def name_of(self, param: nn.Parameter) -> str:
        return self._names[id(param)]

    def trainable_signature(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self.parameters())

    def state_bytes(self) -> int:
        return optimizer_state_bytes(self.optimizer)

    def params_with_state(self) -> list[str]:
        return [self._names[id(p)] for p in self.optimizer.state]

    def _group_index(self, group: str) -> int:
        for index, torch_group in enumerate(self.optimizer.param_groups):
            if torch_group["name"] == group:
                return index
        names = [g["name"] for g in self.optimizer.param_groups]
        raise AdaptlabError(f"no optimizer group {group!r}; groups are {names}")

    # -- checkpoints ---------------------------------------------------------------------------
    def layout(self) -> dict[str, Any]:
        """JSON: the groups added mid-run and the scheduler (the state dict's tensors are
        saved apart, as safetensors)."""
        return {"added": self.added, "scheduler": self.scheduler.state_dict()}

    def restore(self, optimizer_state: dict, layout: dict[str, Any], sharded: bool = False
                ) -> None:
        """``sharded``: the saved state holds whole tensors, each process keeps its slice."""
        params = dict(self.model.named_parameters())
        for group in layout.get("added", []):
            missing = [n for n in group["params"] if n not in params]
            if missing:
                raise AdaptlabError(f"checkpoint: optimizer group {group['name']!r} names "
                                    f"parameter {missing[0]!r}, which this model lacks")
            self.add_parameters([(n, params[n]) for n in group["params"]], group["name"],
                                group["lr"], group["weight_decay"])
        if sharded:
            from adaptlab.engine.sharding import optimizer_state_like

            optimizer_state = optimizer_state_like(self.optimizer, optimizer_state)
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(layout["scheduler"])
