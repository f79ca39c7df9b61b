"""Several processes, one run: who writes, when everyone waits, and what is gathered.

A run started by ``torchrun`` (or ``accelerate launch --multi_gpu``, or ``adaptlab run
--processes N``, which starts ``torchrun``) has ``WORLD_SIZE`` in its environment; Accelerate
joins the process group from it (gloo on CPU, NCCL on GPUs). On CPU, processes that ``mpirun``
started (``accelerate launch --cpu --mpirun_hostfile``) carry MPI's variables instead, which
Accelerate turns into the same ones when it joins. Everything here is a no-op in one process.

The processes may run on several machines. ``rank`` counts over all of them and rank 0 alone
writes the run folder; ``local_rank`` counts on one machine, whose files (a cache under the
home folder) the other machines may not see.

The run's ``batch_size`` is the *global* batch: each of N processes takes ``batch_size / N``
of every batch (Accelerate's ``split_batches``). Steps per epoch, the schedule and the order
of samples are then the same whatever N is, so a run resumes with another process count and
two processes reproduce one (up to floating-point summation order).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from adaptlab.errors import AdaptlabError, CollectiveError

# What MPI launchers (Open MPI, Intel MPI, MVAPICH) call the process count, as Accelerate reads it.
MPI_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's number on its own machine (0 for the first one there)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run folder (rank 0; the only process when alone)."""
    return rank() == 0


def _mpi_size() -> int:
    return max(int(os.environ.get(name) or 1) for name in MPI_SIZE)


def cpu_asked(device: str) -> bool:
    """Whether Accelerate is to be told "CPU": asked for, or ``auto`` in several processes
    without CUDA. Left to choose there, Accelerate joins no process group (it takes the CPU
    for one process), and every process would train alone and write checkpoints."""
    several = world_size() > 1 or _mpi_size() > 1
    return device == "cpu" or (device == "auto" and several and not torch.cuda.is_available())


def join(device: str) -> None:
    """Join the process group before anything is written, so the ranks can wait for each
    other from the first file on (Accelerate keeps the group for the run's Accelerator)."""
    if world_size() == 1 and _mpi_size() == 1 and os.environ.get("ACCELERATE_USE_CPU") == "True" \
            and os.environ.get("MASTER_ADDR"):
        # `accelerate launch --cpu` runs the command once, with no rank, unless mpirun starts
        # it; it sets MASTER_ADDR only when more processes or machines were asked for. Going
        # on would train alone, and on several machines as several unrelated runs.
        raise AdaptlabError("accelerate launch --cpu started one process without a rank: it "
                            "starts several only through mpirun (--mpirun_hostfile); use "
                            "`accelerate launch --multi_gpu --num_processes N` (torchrun, on CPU "
                            "too) or `adaptlab run ... --processes N`")
    if world_size() == 1 and _mpi_size() == 1:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu_asked(device))
    if world_size() == 1:
        # Accelerate sets WORLD_SIZE and RANK from MPI's variables on CPU only; elsewhere each
        # process would go on alone and write the run folder.
        raise AdaptlabError(f"mpirun started {_mpi_size()} processes, which Accelerate joins "
                            "on CPU only: train with --device cpu, or start them with torchrun")


def barrier() -> None:
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


@contextmanager
def main_first():
    """The block runs in three turns: the main process, then the first process of every other
    machine, then the rest. Caches a run builds (a plugin's pre-trained model) sit in a folder
    that the machines may share or not, and neither needs saying: on a shared filesystem the
    main process builds and every other process finds the result; on separate ones the first
    process of each machine finds nothing and builds that machine's copy (the builds are
    seeded, and DistributedDataParallel starts every process from the main one's weights).
    Letting the first process of every machine build at once would be simpler, but on a
    shared filesystem they would build the same folder together."""
    turn = 0 if is_main() else 1 if local_rank() == 0 else 2
    for _ in range(turn):
        barrier()
    yield
    for _ in range(2 - turn):
        barrier()


def check_together(check: Callable[[], None], everyone: bool) -> None:
    """Run ``check`` on the main process (on every process when ``everyone``) and raise its
    first failure, an AdaptlabError, on all of them, so they stop together and the main
    process, which reports errors, says what failed elsewhere and on which machine."""
    if world_size() == 1:
        check()
        return
    error = None
    if everyone or is_main():
        try:
            check()
        except AdaptlabError as exc:
            error = str(exc)
    failed = [(number, host, message) for number, host, message
              in gather_objects((rank(), socket.gethostname(), error)) if message]
    if failed:
        number, host, message = failed[0]
        raise CollectiveError(message if number == 0 else
                              f"{message} (in process {number}, on {host})")


def check_shared_folder(folder: Path) -> None:
    """Refuse, before training, unless every process sees what the main process writes in the
    run folder. The main process alone writes it, but all of them read back from it (the best
    epoch's weights, the top epochs to average, the checkpoints of a resumed run): a machine
    with a folder of its own at that path would carry on with other weights, or wait forever
    in an evaluation the others do not run. A shared filesystem is what clusters have for
    outputs; sending every file over the process group instead would be a second storage
    path to keep right."""
    if world_size() == 1:
        return
    created, token = False, None
    if is_main():
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        # Named as an interrupted write is (run._leftover), so a killed run leaves no "run".
        (folder / f".processes-{token}.tmp").write_text(token)
    probe = folder / f".processes-{gather_objects(token)[0]}.tmp"
    for _ in range(10):  # a network filesystem may show a new file a moment late
        if probe.is_file():
            break
        time.sleep(1)
    answers = gather_objects((rank(), socket.gethostname(), probe.is_file()))
    blind = [(number, host) for number, host, seen in answers if not seen]
    if is_main():
        probe.unlink()
        if blind and created:
            folder.rmdir()
    if blind:
        number, host = blind[0]
        raise CollectiveError(f"--out {folder}: process {number} on {host} cannot see the "
                              "files process 0 writes there; with several machines the run "
                              "folder must be on a filesystem they all share")


def check_batch(batch_size: int, processes: int) -> None:
    if processes > 1 and batch_size % processes:
        raise CollectiveError(f"batch_size={batch_size} is the global batch and must divide "
                              f"evenly over {processes} processes; use a multiple of "
                              f"{processes}")


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
        raise CollectiveError(f"after epoch {epoch} the {world_size()} processes hold different "
                              f"weights (parameter checksums {lowest!r} to {highest!r}): a "
                              "strategy changed what trains without synchronising gradients")
