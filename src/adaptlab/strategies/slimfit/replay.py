"""SlimFit's schedule replayed before training: which units each optimizer step of a run will
train, for the memory planner (a run's memory peak is the peak over the sets its steps train).

The schedule's rule (:func:`.units.select_trained` on the scores) is deterministic; what is
not known before training is each score, the relative change ``mean(|Δw| / |w|)`` of a unit's
last step. It is nearly known: a frozen unit keeps no optimizer state, so a unit comes back
to AdamW's first step, which moves every entry by the learning rate (``m / sqrt(v) = ±1``),
plus the decoupled decay, so its score is ``rate * (mean(1 / |w|) + decay)``. The mean is
ruled by the entries nearest zero, and those grow as the unit trains: after steps of rates
``r1, r2, ...`` an entry has wandered about ``sqrt(r1² + r2² + ...)`` (a random walk of
±rate steps), so the replay counts every entry at least that far from zero. A sorted copy of
each unit's magnitudes with suffix sums of their inverses makes each score a binary search;
the sorts are the cost (about 2 s for MiniLM's 22 M weights on one busy core), not the steps.

How far it follows a run (point transformer from the generated-shapes source run on
``cgal-meshes``, 33 units, 33 steps, compressed, seeds 0-2): at freeze ratio 0.95 (2 units a
step) the units of the first 18 to 19 steps exactly, the whole first rotation (the initial
scores are random and large) and the steps after it while the predicted scores order the
units as the run's do; at 0.9 the first 9 to 10 steps (the rotation is 9), at 0.5 the first
4 to 5. Then it departs, as a unit trained on consecutive steps moves by less than the rate,
and the later sets are the rule applied to predicted scores: the same kind of sets (units of
similar weights and rates), not the same ones, so the planned peak over them is an estimate.
On that demo's memory benchmark (six SlimFit rows, three seeds each) the plan came to
0.92-1.09 of the measured total; counting only the first rotation and one set after it (the
planner before this replay) came to 0.75-1.00. Drawing a random sign per entry instead of
the walk followed the 0.95 runs a few steps longer, planned 0.88-1.22 of the measured totals
where the walk planned 0.82-1.04 (18 runs, before the point networks pooled with ``max``),
and took 15 s on MiniLM at freeze ratio 0.5 where the walk took 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from adaptlab.strategies.slimfit.units import Unit, select_trained

if TYPE_CHECKING:
    from adaptlab.costs.step_rates import StepRates


class _Magnitudes:
    """One unit's weight magnitudes, sorted, with the suffix sums of their inverses (an entry
    exactly zero counts 1, as :func:`.units.relative_change` divides by 1 there)."""

    def __init__(self, weight: torch.Tensor) -> None:
        # numpy's float32 sort: about 2.5 times torch's on one core for MiniLM's embeddings.
        self.sorted = np.sort(weight.detach().abs().float().cpu().numpy().ravel())
        magnitudes = self.sorted.astype(np.float64)
        inverse = 1.0 / np.where(magnitudes == 0, 1.0, magnitudes)
        self.suffix = np.append(np.cumsum(inverse[::-1])[::-1], 0.0)
        self.walked = 0.0  # sum of squared rates this unit has stepped with

    def mean_inverse(self) -> float:
        """``mean(1 / |w|)`` with every entry at least the walk's spread from zero."""
        spread = self.walked ** 0.5
        below = int(np.searchsorted(self.sorted, spread, side="right")) if spread else 0
        return ((below / spread if below else 0.0) + float(self.suffix[below])) \
            / len(self.sorted)


def replay_schedule(units: list[Unit], first_scores: torch.Tensor, freeze_ratio: float,
                    weights: dict[str, torch.Tensor], rates: StepRates) -> list[list[int]]:
    """The indices of the units trained at each of ``len(rates)`` steps, starting from the
    run's initial scores and the weights it starts from (``weights``: each unit's scored
    tensor)."""
    scores = first_scores.clone()
    magnitudes: dict[str, _Magnitudes] = {}
    steps = []
    for step in range(len(rates)):
        trained = torch.nonzero(select_trained(scores, freeze_ratio)).flatten().tolist()
        steps.append(trained)
        for index in trained:
            name = units[index].name
            if name not in magnitudes:
                magnitudes[name] = _Magnitudes(weights[name])
            rate = rates.rate(step, name)
            scores[index] = rate * (magnitudes[name].mean_inverse() + rates.decay(name))
            magnitudes[name].walked += rate ** 2
    return steps
