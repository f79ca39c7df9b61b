"""Out of device memory: split each batch into micro-batches and carry on.

A batch that does not fit is not skipped and the run does not die: the engine halves the
micro-batch (each loader batch split into 2, 4, ... pieces), adds up the pieces' gradients
before the one optimizer step, and so keeps the effective batch and the schedule. Accelerate's
``find_executable_batch_size`` restarts a whole function with a smaller batch, which would
change the batch and the schedule of a run already under way; this keeps both.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch

from adaptlab.errors import AdaptlabError


def split_batch(inputs: Any, labels: torch.Tensor, pieces: int) -> list[tuple[Any, Any]]:
    """``pieces`` consecutive slices of a batch (fewer when the batch is smaller); what is
    not per-sample (a value without the batch's length) is given to every slice."""
    size = len(labels)
    step = -(-size // pieces)
    return [(_slice(inputs, start, start + step, size), labels[start:start + step])
            for start in range(0, size, step)]


def _slice(value: Any, start: int, stop: int, size: int) -> Any:
    if isinstance(value, Mapping):
        return {k: _slice(v, start, stop, size) for k, v in value.items()}
    if (torch.is_tensor(value) and value.ndim and value.shape[0] == size) or \
            (isinstance(value, list) and len(value) == size):
        return value[start:stop]
    return value


class MicroBatches:
    """How many pieces each batch is split into, doubled on every out-of-memory error."""

    def __init__(self) -> None:
        self.pieces = 1

    def after_out_of_memory(self, batch: int, processes: int, bus) -> None:
        """Halve the micro-batch, or say why the run cannot continue."""
        if processes > 1:
            # The other processes are already waiting in the gradient all-reduce for this
            # one: a retry here would desynchronise them.
            raise AdaptlabError("out of device memory with several processes; resume the run "
                                "with a smaller batch_size or grad_accum > 1")
        if -(-batch // self.pieces) <= 1:
            raise AdaptlabError("out of device memory with a micro-batch of one sample; choose "
                                "a smaller image_size, another strategy or a smaller backbone")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.pieces *= 2
        micro = -(-batch // self.pieces)
        print(f"adaptlab: out of device memory at batch {batch}: continuing with micro-batches "
              f"of {micro} ({self.pieces} per step, gradients accumulated; the effective batch "
              "stays the same)", file=sys.stderr, flush=True)
        bus.emit("out_of_memory", batch=batch, micro_batch=micro, pieces=self.pieces)
