"""``adaptlab run --processes N``: the same command, started N times by torchrun.

The launcher is PyTorch's own (``torch.distributed.run``, which ``torchrun`` is): it starts the
processes, gives each its rank and a rendezvous on this machine, and stops them all when one
fails. Runs across several machines use ``torchrun --nnodes ... -m adaptlab.cli run ...``
directly; nothing here is needed for that.
"""

from __future__ import annotations

import subprocess
import sys

from adaptlab.errors import AdaptlabError


def without_processes(argv: list[str]) -> list[str]:
    """``argv`` with ``--processes N`` (or ``--processes=N``) taken out."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--processes":
            skip = True
        elif not item.startswith("--processes="):
            out.append(item)
    return out


def launch(argv: list[str], processes: int) -> int:
    """Run ``adaptlab ARGV`` in ``processes`` processes on this machine; their exit status."""
    if processes < 1:
        raise AdaptlabError(f"--processes {processes}: needs at least 1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc_per_node", str(processes), "-m", "adaptlab.cli",
               *without_processes(argv)]
    completed = subprocess.run(command, check=False)
    if completed.returncode:
        print(f"adaptlab: error: one of the {processes} processes failed (exit status "
              f"{completed.returncode}); its message is above", file=sys.stderr)
        return 2
    return 0
