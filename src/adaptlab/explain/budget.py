"""How many rows one attribution forward/backward may hold, measured, not guessed.

Captum expands each input by its step or sample count (IG's ``n_steps``, NoiseTunnel's
``nt_samples``) and runs out of memory on one large image when left alone (captum #245,
#538); its GradientShap has no internal batch size at all (#1350). We measure what one row
of the model keeps for the backward pass and fit the rows into a share of the free memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from torch import nn

MAX_ROWS = 256
CPU_BUDGET_CAP = 4 * 1024**3


@dataclass
class BatchPlan:
    rows: int
    bytes_per_row: int
    budget_bytes: int
    device: str

    def text(self) -> str:
        return (f"{self.rows} rows per pass: {self.bytes_per_row / 2**20:.1f} MiB kept for the "
                f"backward pass per row, {self.budget_bytes / 2**30:.2f} GiB budget on {self.device}")


def saved_bytes_per_row(score: nn.Module, example: torch.Tensor) -> int:
    """Bytes autograd saves for a forward pass of one row (what the backward pass needs)."""
    total = 0
    # Weights a layer saves are not a per-row cost: skip their storages.
    seen: set[int] = {p.untyped_storage().data_ptr() for p in score.parameters()}

    def pack(tensor: torch.Tensor):
        nonlocal total
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:  # views of one storage count once
            seen.add(key)
            total += storage.nbytes()
        return tensor

    x = example[:1].detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = score(x)
    del out
    return max(total, 1)


def memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    # Available, not free: the free pages leave out the file cache the kernel hands back on
    # demand, which after a few hours of work holds most of a machine's memory. Planned on
    # the free pages, the rows shrank and the attributions changed in their last digits
    # with what the disk had read lately (the same explanation, killed and rerun, differed).
    return int(min(psutil.virtual_memory().available * 0.25, CPU_BUDGET_CAP))


def plan_rows(score: nn.Module, example: torch.Tensor) -> BatchPlan:
    device = next(score.parameters()).device
    per_row = saved_bytes_per_row(score, example.to(device))
    budget = memory_budget(device)
    # Twice the saved bytes: gradients of the activations live beside them in the backward.
    rows = int(max(1, min(MAX_ROWS, budget // (2 * per_row))))
    return BatchPlan(rows, per_row, budget, str(device))
