"""What a training run costs: parameters, memory by kind, time.

Saved activations are counted with autograd's saved-tensor hooks: every tensor autograd keeps
for the backward pass goes through the pack hook, so the count is exact on any device,
including the CPU where no allocator statistics exist. Parameters that autograd saves (a
weight kept for the input gradient) are not activations and are left out; each storage is
counted once.

Memory that a strategy changes while training (the trainable set, and with it gradients,
optimizer state and saved activations) is recorded per optimizer step; ``costs.json`` keeps
each kind's peak over steps in ``memory_bytes`` and its median in ``memory_bytes_median``,
and ``peak_total_bytes``, the peak over steps of the step's four kinds together (what must
fit): when the trainable set changes, the kinds peak at different steps (SlimFit's largest
gradient and optimizer state come with the word embeddings, its largest saved activations with
other units), so the sum of the per-kind peaks overstates the memory a run needs. Saved
activations are counted on the first step and again whenever the engine sees the trainable
set change, since counting every step would slow every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    return (str(tensor.device), tensor.untyped_storage().data_ptr())


class SavedActivationCounter:
    """Context manager: bytes of distinct tensors autograd saves inside the block."""

    def __init__(self, model: nn.Module) -> None:
        from adaptlab.engine.sharding import is_sharded

        self._model = model
        self._sharded = is_sharded(model)
        self._exclude = self._parameter_keys()
        self._seen: set = set()
        self.bytes = 0
        self._hooks = None

    def _key(self, tensor: torch.Tensor):
        """What identifies a storage (one counted once)."""
        return _storage_key(tensor)

    def _parameter_keys(self) -> set:
        from adaptlab.engine.sharding import local

        return {self._key(local(p)) for p in self._model.parameters()}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = self._key(tensor)
        if self._sharded and key not in self._seen:
            # Sharded (fsdp), a block's whole weights are its parameters only while its
            # forward runs (gathered, then freed): not activations, not known beforehand.
            # Only the weights gathered now: a freed gather's address is soon an activation's.
            self._exclude = self._parameter_keys()
        if key not in self._exclude and key not in self._seen:
            self._seen.add(key)
            self.bytes += tensor.untyped_storage().nbytes()
        return tensor

    def __enter__(self) -> SavedActivationCounter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def _tensor_bytes(tensors) -> int:
    """What this process holds (of a sharded tensor, its slice)."""
    from adaptlab.engine.sharding import local

    return sum(local(t).numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps (Adam: two moments and a step per tensor)."""
    return _tensor_bytes(v for state in optimizer.state.values() for v in state.values()
                         if torch.is_tensor(v))


STEP_KEYS = ("trainable_params", "gradients", "optimizer", "activations")


def _median(runs: list[list[int]], index: int) -> int:
    """Median of column ``index`` over run-length encoded rows ``[values..., count]``."""
    pairs = sorted((row[index], row[-1]) for row in runs)
    total = sum(count for _, count in pairs)
    seen = 0
    for value, count in pairs:
        seen += count
        if 2 * seen >= total:
            return value
    return 0


@dataclass
class CostMeter:
    """Collects the numbers ``costs.json`` holds."""

    trainable_params: int = 0
    total_params: int = 0
    memory_bytes: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_samples: int = 0
    epochs_timed: int = 0
    steps_timed: int = 0
    device: str = "cpu"
    # Per optimizer step, run-length encoded (values change rarely): rows of
    # ``[trainable_params, gradients, optimizer, activations, steps]``.
    step_runs: list[list[int]] = field(default_factory=list)

    def measure_model(self, model: nn.Module) -> None:
        from adaptlab.strategies.base import count_parameters

        self.trainable_params, self.total_params = count_parameters(model)
        params = list({id(p): p for p in model.parameters()}.values())
        self.memory_bytes["parameters"] = max(self.memory_bytes.get("parameters", 0),
                                              _tensor_bytes(params))
        self.memory_bytes["gradients"] = _tensor_bytes(p for p in params if p.requires_grad)

    def measure_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.memory_bytes["optimizer"] = optimizer_state_bytes(optimizer)

    def record_activations(self, counted_bytes: int) -> None:
        """The saved activations of the current trainable set (the latest count holds until
        the next)."""
        self.memory_bytes["activations"] = counted_bytes

    def record_step(self, trainable: int, gradients: int, optimizer: int) -> None:
        """One optimizer step's trainable parameters, gradient bytes and optimizer state."""
        row = [trainable, gradients, optimizer, int(self.memory_bytes.get("activations") or 0)]
        if self.step_runs and self.step_runs[-1][:-1] == row:
            self.step_runs[-1][-1] += 1
        else:
            self.step_runs.append([*row, 1])

    def record_cuda_peak(self) -> None:
        self.memory_bytes["peak_cuda"] = (torch.cuda.max_memory_allocated()
                                          if torch.cuda.is_available() and
                                          self.device.startswith("cuda") else None)

    def add_epoch(self, seconds: float, samples: int, steps: int) -> None:
        self.train_seconds += seconds
        self.train_samples += samples
        self.epochs_timed += 1
        self.steps_timed += steps

    def state(self) -> dict[str, Any]:
        """JSON for a checkpoint: the per-step record and the timing so far."""
        return {"step_runs": self.step_runs, "train_seconds": self.train_seconds,
                "train_samples": self.train_samples, "epochs_timed": self.epochs_timed,
                "steps_timed": self.steps_timed}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step_runs = [list(row) for row in state.get("step_runs", [])]
        for key in ("train_seconds", "train_samples", "epochs_timed", "steps_timed"):
            setattr(self, key, state.get(key, getattr(self, key)))

    def to_dict(self) -> dict[str, Any]:
        memory = {"parameters": 0, "gradients": 0, "optimizer": 0, "activations": 0,
                  "peak_cuda": None, **self.memory_bytes}
        trainable = self.trainable_params
        median: dict[str, int] = {}
        peak_total = sum(int(memory[key] or 0) for key in STEP_KEYS[1:]) + memory["parameters"]
        if self.step_runs:
            # Parameters do not change with the trainable set; the other kinds of one step
            # are added before the peak is taken.
            peak_total = memory["parameters"] + max(sum(row[1:len(STEP_KEYS)])
                                                    for row in self.step_runs)
            for index, key in enumerate(STEP_KEYS):
                peak = max(row[index] for row in self.step_runs)
                median[key] = _median(self.step_runs, index)
                if key == "trainable_params":
                    trainable = peak
                else:
                    memory[key] = peak
        return {
            "trainable_params": trainable,
            "total_params": self.total_params,
            "trainable_percent": 100.0 * trainable / max(self.total_params, 1),
            "memory_bytes": memory,
            "peak_total_bytes": peak_total,
            "memory_bytes_median": {k: v for k, v in median.items() if k != "trainable_params"},
            "trainable_params_median": median.get("trainable_params", trainable),
            "optimizer_steps": sum(row[-1] for row in self.step_runs),
            "seconds_per_epoch": self.train_seconds / max(self.epochs_timed, 1),
            "seconds_per_step": self.train_seconds / max(self.steps_timed, 1),
            "samples_per_second": self.train_samples / self.train_seconds
            if self.train_seconds else 0.0,
            "device": self.device,
        }
