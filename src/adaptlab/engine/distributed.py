"""Several processes, one run: who writes, when everyone waits, and what is gathered.

A run started by ``torchrun`` (or ``accelerate launch``, or ``adaptlab run --processes N``,
which starts ``torchrun``) has ``WORLD_SIZE`` in its environment; Accelerate joins the process
group from it (gloo on CPU, NCCL on GPUs). Everything here is a no-op in one process.

The run's ``batch_size`` is the *global* batch: each of N processes takes ``batch_size / N``
of every batch (Accelerate's ``split_batches``). Steps per epoch, the schedule and the order
of samples are then the same whatever N is, so a run resumes with another process count and
two processes reproduce one (up to floating-point summation order).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from adaptlab.errors import AdaptlabError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run folder (rank 0; the only process when alone)."""
    return rank() == 0


def join(device: str) -> None:
    """Join the process group before anything is written, so the ranks can wait for each
    other from the first file on (Accelerate keeps the group for the run's Accelerator)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=device == "cpu")


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


@contextmanager
def main_first():
    """The main process runs the block first, the others after it: caches a run builds (a
    pre-trained plugin model, a source run) are built once and read by the rest."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def check_batch(batch_size: int, processes: int) -> None:
    if processes > 1 and batch_size % processes:
        raise AdaptlabError(f"batch_size={batch_size} is the global batch and must divide "
                            f"evenly over {processes} processes; use a multiple of {processes}")


def gather_objects(value) -> list:
    """``value`` from every process, in rank order (``[value]`` when alone)."""
    if world_size() == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def sum_over_processes(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over the processes (the values themselves when alone)."""
    if world_size() == 1 or not values:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def any_process(flag: bool) -> bool:
    """True on every process when it is true on any (a stop asked of one stops all at the
    same step, or the others would wait for it forever)."""
    if world_size() == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Mean of each gradient over the processes, as one flat all-reduce.

    DistributedDataParallel fixes the parameters it synchronises when it wraps the model, so
    a strategy whose trainable set changes during training (SlimFit) cannot use it: a unit
    unfrozen later would train on one process's data only. Every process freezes the same
    units (the schedule is seeded and reads the same synchronised weights), so the set of
    gradients present is the same everywhere and one flat buffer lines them up."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """The main process's buffers (BatchNorm's running statistics) on every process, as
    DistributedDataParallel does before each forward, for a model it does not wrap."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)


def check_replicas_agree(model: torch.nn.Module, epoch: int) -> None:
    """Refuse to go on when the processes' models differ.

    Data-parallel training keeps every process's weights bit for bit equal (the same averaged
    gradients meet the same optimizer); a strategy that changed its trainable set without
    synchronising, or a layer with per-process state, breaks that silently, and each
    process would then evaluate and save another model. One checksum per epoch finds it."""
    if world_size() == 1:
        return
    with torch.no_grad():
        total = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    tensor = torch.tensor([total, -total], dtype=torch.float64)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    highest, lowest = float(tensor[0]), -float(tensor[1])
    if highest != lowest:
        raise AdaptlabError(f"after epoch {epoch} the {world_size()} processes hold different "
                            f"weights (parameter checksums {lowest!r} to {highest!r}): a "
                            "strategy changed what trains without synchronising gradients")
