"""SlimFit's schedule replayed before training: which units each optimizer step of a run will
train, for the memory planner (a run's memory peak is the peak over the sets its steps train).

The schedule's rule (:func:`.units.select_trained` on the scores) is deterministic; what is
not known before training is each score, the relative change ``mean(|Δw| / |w|)`` of a unit's
last step. It is nearly known: a frozen unit keeps no optimizer state, so a unit comes back
to AdamW's first step, which moves every entry its gradient reaches by the learning rate
(``m / sqrt(v) = ±1``) and the others not at all, plus the decoupled decay, so its score is
``rate * (mean(reached / |w|) + decay)``. Which entries the gradient reaches comes from one
real backward of the run's first batch (``StepRates.reached``). The mean is
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

On EfficientNet-Lite0 the gradient's reach decides the scores: thousands of its weights are
1e-11 to 1e-8, in channels that get no gradient. Over the units a run trained once (four runs,
wildlife and medical, 24 and 36 steps, seeds 0 and 1), the predicted score ranks with the
run's own at Spearman 0.82-0.92 and is 1.3-1.6 times it on average (at most 15 times); counting
every entry as moved, 0.47-0.70 and up to 2.9 million times. The sets after the rotation are
still not the run's: over 18 runs the planned gradients came to 0.87-1.87 of the measured
peak (0.50-1.21 before) and the total to 0.93-1.16 (0.91-1.08).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from adaptlab.strategies.slimfit.units import Unit, select_trained

if TYPE_CHECKING:
    from adaptlab.costs.step_rates import StepRates


class _Magnitudes:
    """One unit's weight magnitudes where its gradient reaches, sorted, with the suffix sums of
    their inverses (an entry exactly zero counts 1, as :func:`.units.relative_change` divides
    by 1 there); the entries it does not reach move by the decay alone."""

    def __init__(self, weight: torch.Tensor, reached: torch.Tensor | None) -> None:
        magnitudes = weight.detach().abs().float().cpu()
        self.entries = magnitudes.numel()
        if reached is not None:
            magnitudes = magnitudes[reached.cpu()]
        # numpy's float32 sort: about 2.5 times torch's on one core for MiniLM's embeddings.
        self.sorted = np.sort(magnitudes.numpy().ravel())
        inverse = 1.0 / np.where(self.sorted == 0, 1.0, self.sorted.astype(np.float64))
        self.suffix = np.append(np.cumsum(inverse[::-1])[::-1], 0.0)
        self.walked = 0.0  # sum of squared rates this unit has stepped with

    def mean_inverse(self) -> float:
        """The mean over the unit's entries of ``1 / |w|`` where the gradient reaches (0
        elsewhere), with every entry at least the walk's spread from zero."""
        spread = self.walked ** 0.5
        below = int(np.searchsorted(self.sorted, spread, side="right")) if spread else 0
        return ((below / spread if below else 0.0) + float(self.suffix[below])) / self.entries


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
                magnitudes[name] = _Magnitudes(weights[name], rates.reached.get(name))
            rate = rates.rate(step, name)
            scores[index] = rate * (magnitudes[name].mean_inverse() + rates.decay(name))
            magnitudes[name].walked += rate ** 2
    return steps
