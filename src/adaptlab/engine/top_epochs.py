"""The k best validation epochs' weights, kept for averaging at the end of a run
(``average_top_k``, AutoGluon's default of averaging the top 3 checkpoints).

Each epoch that ranks among the k best is saved as ``checkpoints/top/epoch-N.safetensors``
(the strategy's declared tensors); one that drops out of the k is deleted. Which epochs are
kept, with their scores, lives in the training state, so a resumed run continues the ranking.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.engine.atomic import atomic_write_with


def ranked(entries: list[list[float]], higher_is_better: bool) -> list[list[float]]:
    """``[[score, epoch], ...]`` best first; ties go to the earlier epoch."""
    return sorted(entries, key=lambda e: (-e[0] if higher_is_better else e[0], e[1]))


class TopEpochs:
    def __init__(self, folder: Path, k: int, higher_is_better: bool) -> None:
        self.folder, self.k, self.higher_is_better = Path(folder), k, higher_is_better

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{int(epoch)}.safetensors"

    def offer(self, entries: list[list[float]], score: float, epoch: int,
              tensors: dict[str, torch.Tensor], write: bool) -> list[list[float]]:
        """The kept entries after epoch ``epoch`` scored ``score``; its tensors are saved
        when it ranks among the k best (``write``: this process writes files)."""
        kept = ranked([*entries, [float(score), int(epoch)]], self.higher_is_better)
        dropped, kept = kept[self.k:], kept[: self.k]
        if write:
            if any(e[1] == epoch for e in kept):
                self.folder.mkdir(parents=True, exist_ok=True)
                cpu = {name: value.cpu() for name, value in tensors.items()}
                atomic_write_with(self.path(epoch), lambda tmp: save_file(cpu, str(tmp)))
            for _, old in dropped:
                self.path(old).unlink(missing_ok=True)
        return kept

    def average(self, entries: list[list[float]]) -> dict[str, torch.Tensor]:
        """The key-by-key mean of the kept epochs' tensors (the soups' averaging)."""
        from adaptlab.soups.average import TensorMean

        mean = TensorMean()
        for _, epoch in entries:
            mean.add(load_file(str(self.path(epoch))))
        return mean.mean()
