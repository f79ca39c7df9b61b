"""A target weight's spectrum: the SVD SVFit trains on, and the rank that keeps a share of its
energy.

The SVD is taken in float64 on the CPU whatever device or dtype the weight lives in, so that
``apply`` on a freshly built model (a reload, an export, an explanation) recomputes the same
singular triplets the run trained, on a CPU-only machine as on a GPU one. Two decompositions
of one matrix can still differ by the sign of a singular pair (u_i, v_i) -> (-u_i, -v_i) on
another LAPACK build; the adapted weight ``U diag(s) V^T`` does not change with such a flip,
so saved singular values stay valid. Only singular values that (nearly) tie leave their
subspace undetermined; pre-trained weights practically never have such ties among their top
values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight as it is, a convolution's ``(out, in, *kernel)`` as ``(out, in *
    kernel)``: each output channel's filter is one row, so the SVD mixes whole filters."""
    return weight.reshape(weight.shape[0], -1)


@dataclass
class Spectrum:
    """Singular triplets of a weight (as a matrix): ``left`` ``(out, k)``, ``values``
    ``(k,)`` (descending), ``right`` ``(in, k)``."""

    left: torch.Tensor
    values: torch.Tensor
    right: torch.Tensor

    def top(self, count: int, like: torch.Tensor) -> Spectrum:
        """The ``count`` largest triplets, in ``like``'s dtype and on its device."""
        def cast(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(like.device, like.dtype).contiguous()

        return Spectrum(cast(self.left[:, :count]), cast(self.values[:count]),
                        cast(self.right[:, :count]))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def decompose(weight: torch.Tensor) -> Spectrum:
    """The full thin SVD of ``weight`` (as a matrix), float64 on the CPU.

    On one thread: a threaded LAPACK may round differently with the machine's core count, and
    on a busy machine its threads wait on each other (measured: 1 s for EfficientNet-Lite0's
    32 targets on one thread, 29 s on two threads sharing two loaded cores)."""
    matrix = as_matrix(weight.detach()).to("cpu", torch.float64)
    with _one_thread():
        left, values, right_t = torch.linalg.svd(matrix, full_matrices=False)
    return Spectrum(left, values, right_t.T)


def rank_by_energy(values: torch.Tensor, energy: float) -> int:
    """The fewest top singular values whose squares sum to at least ``energy`` of all the
    squares (SVFit's "over 99% of the matrix's information" at 0.99); 0 for a zero matrix."""
    squares = values.to(torch.float64) ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 0
    kept = torch.cumsum(squares, 0) / total
    # Rounding can leave the last cumulative share a hair under 1.0: cap at every value.
    rank = int(torch.searchsorted(kept, torch.tensor([energy], dtype=torch.float64))[0]) + 1
    return min(rank, values.numel())
