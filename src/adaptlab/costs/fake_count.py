"""What one training step of a planned model keeps, counted without computing: the forward
and loss run on fake tensors (``FakeTensorMode``: shapes, dtypes and aliasing as in a real
forward, no data, no allocation) under saved-tensor hooks, the gradients the loss reaches, and
AdamW's state for them. Used by :mod:`adaptlab.costs.planner`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from adaptlab.costs.meter import SavedActivationCounter, optimizer_state_bytes

_ADAMW_STATE: dict[tuple[torch.dtype, str], tuple[int, int]] = {}


def held_elements(tensor: torch.Tensor, shards: int = 1) -> int:
    """Elements of ``tensor`` the main process holds: all of them, or with the weights
    sharded over ``shards`` processes (fsdp), its slice of the first dimension, which
    rounds up."""
    if shards == 1 or tensor.ndim == 0 or not tensor.shape[0]:
        return tensor.numel()
    rows = tensor.shape[0]
    return -(-rows // shards) * (tensor.numel() // rows)


def adamw_state_bytes(param: torch.Tensor, shards: int = 1) -> int:
    """Bytes a real AdamW keeps for ``param`` after a step: the per-element state (two moments)
    and the per-tensor state (the step count), measured once per dtype and device type on a
    one- and a two-element tensor with :func:`optimizer_state_bytes`, not assumed."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    key = (param.dtype, param.device.type)
    if key not in _ADAMW_STATE:
        device = "cpu" if param.device.type == "meta" else param.device
        sizes = []
        with unset_fake_temporarily():  # a real optimizer on real tensors, even mid-plan
            for numel in (1, 2):
                probe = nn.Parameter(torch.zeros(numel, dtype=param.dtype, device=device))
                optimizer = torch.optim.AdamW([probe])
                probe.grad = torch.zeros_like(probe)
                optimizer.step()
                sizes.append(optimizer_state_bytes(optimizer))
        per_element = sizes[1] - sizes[0]
        _ADAMW_STATE[key] = (per_element, sizes[0] - per_element)
    per_element, per_tensor = _ADAMW_STATE[key]
    return per_element * held_elements(param, shards) + per_tensor


def tensor_bytes(tensor: torch.Tensor, shards: int = 1) -> int:
    return held_elements(tensor, shards) * tensor.element_size()


# -- saved activations on fake tensors -------------------------------------------------------------
def _storage_id(tensor: torch.Tensor) -> int:
    """The storage's identity, for real and fake tensors alike (a fake tensor's data pointer is
    0 for every storage, so the meter's key would merge them all)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    return StorageWeakRef(tensor.untyped_storage()).cdata


class PlannedActivationCounter(SavedActivationCounter):
    """:class:`SavedActivationCounter`, keyed by storage identity so it counts fake tensors:
    distinct storages autograd saves, parameters' excluded."""

    def _key(self, tensor: torch.Tensor) -> int:  # fake storages have no data pointer
        return _storage_id(tensor)


class FakeModel:
    """Context manager: ``model``'s parameters and buffers replaced by fake tensors on
    ``device`` (the same names, shapes, dtypes and ``requires_grad``; shared tensors stay
    shared), the real ones put back on exit."""

    def __init__(self, model: nn.Module, mode, device: str) -> None:
        self.model, self.mode, self.device = model, mode, device
        self._saved: list[tuple[nn.Module, dict, dict]] = []

    def _fake(self, tensor: torch.Tensor, memo: dict[int, torch.Tensor]) -> torch.Tensor:
        if id(tensor) not in memo:
            fake = self.mode.from_tensor(tensor.detach())
            with self.mode:
                fake = fake.to(self.device)
            memo[id(tensor)] = (nn.Parameter(fake, requires_grad=tensor.requires_grad)
                                if isinstance(tensor, nn.Parameter) else fake)
        return memo[id(tensor)]

    def __enter__(self) -> nn.Module:
        memo: dict[int, torch.Tensor] = {}
        for module in self.model.modules():
            self._saved.append((module, dict(module._parameters), dict(module._buffers)))
            for store in (module._parameters, module._buffers):
                for name, tensor in store.items():
                    if tensor is not None:
                        store[name] = self._fake(tensor, memo)
        return self.model

    def __exit__(self, *exc) -> None:
        for module, parameters, buffers in self._saved:
            module._parameters.clear()
            module._parameters.update(parameters)
            module._buffers.clear()
            module._buffers.update(buffers)
        self._saved = []


def graph_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors the loss's graph accumulates gradients into."""
    leaves: set[int] = set()
    stack, seen = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it writes to
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


@dataclass
class SetCount:
    gradients: int
    optimizer: int
    activations: int
    trainable_params: int


def count_set(model, task, strategy, batch, device: str, precision: str, shards: int = 1
              ) -> SetCount:
    """One trainable set (already on the model): a forward and loss of ``batch`` under the
    saved-tensor counter, then the gradients and optimizer state of what the loss reaches
    (the main process's slices of them, sharded over ``shards`` processes)."""
    inputs, labels = batch
    model.train()
    strategy.train_mode(model)  # frozen norm layers keep their statistics, as in a run
    autocast = (torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16"
                               else torch.float16)
                if precision in ("bf16", "fp16") else contextlib.nullcontext())
    with PlannedActivationCounter(model) as counter, autocast:
        outputs = model(inputs)
        loss = task.loss(outputs, labels)
    leaves = graph_leaves(loss)
    stepped = [p for _, p in strategy.candidates(model) if p.requires_grad and id(p) in leaves]
    return SetCount(gradients=sum(tensor_bytes(p, shards) for p in stepped),
                     optimizer=sum(adamw_state_bytes(p, shards) for p in stepped),
                     activations=counter.bytes,
                     trainable_params=sum(p.numel() for _, p in strategy.candidates(model)
                                          if p.requires_grad))


def set_trainable(model: nn.Module, names: set[str]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


def warm_fake_tensors() -> None:
    """One fake operation: the first in a process imports torch's compiler stack (seconds),
    which would otherwise be charged to the first strategy planned."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        torch.empty(1) + 1


def fake_unsupported(error: Exception) -> bool:
    """Whether ``error`` says fake tensors cannot run this model (then a real forward is
    tried), not that the model is wrong."""
    from torch._subclasses import fake_tensor

    unsupported = tuple(getattr(fake_tensor, name) for name in (
        "DataDependentOutputException", "DynamicOutputShapeException",
        "UnsupportedOperatorException") if hasattr(fake_tensor, name))
    if isinstance(error, unsupported):
        return True
    text = str(error).lower()
    return any(part in text for part in ("fake", "meta", "data-dependent", "numpy()",
                                         "cannot access data pointer", ".item()"))
