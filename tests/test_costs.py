"""The cost meter counts what autograd really keeps."""

from __future__ import annotations

import torch
from torch import nn

from adaptlab.costs.meter import CostMeter, SavedActivationCounter


def test_saved_activations_are_counted_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    x = torch.randn(4, 10)
    with SavedActivationCounter(model) as counter:
        loss = model(x).sum()
    loss.backward()
    # Saved for backward: the input x (for the first weight's gradient) and the ReLU output
    # (for ReLU's backward and the second weight's gradient: one storage, counted once).
    # The weights autograd also saves are parameters, not activations.
    assert counter.bytes == (4 * 10 + 4 * 20) * 4


def test_frozen_model_saves_fewer_activations():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    for p in model[0].parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 10)
    with SavedActivationCounter(model) as counter:
        model(x).sum().backward()
    assert counter.bytes == 4 * 20 * 4  # x is no longer needed: nothing below trains


def test_memory_breakdown_counts_trainable_gradients_and_adam_state():
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 5))
    for p in model[0].parameters():
        p.requires_grad_(False)
    meter = CostMeter()
    meter.measure_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(2, 10)).sum().backward()
    optimizer.step()
    meter.measure_optimizer(optimizer)
    costs = meter.to_dict()
    trainable = 20 * 5 + 5
    assert costs["trainable_params"] == trainable
    assert costs["total_params"] == 10 * 20 + 20 + trainable
    assert costs["memory_bytes"]["gradients"] == trainable * 4
    # Adam keeps two moments per trainable value plus a scalar step per tensor.
    assert costs["memory_bytes"]["optimizer"] == 2 * trainable * 4 + 2 * 4


def test_peak_total_adds_one_steps_kinds_instead_of_peaks_from_different_steps():
    """A changing trainable set (SlimFit's rotation) peaks in gradients and optimizer state at
    one step and in saved activations at another: what must fit is the heavier step, less than
    the per-kind peaks added together."""
    model = nn.Linear(10, 10)  # 110 parameters: 440 bytes
    meter = CostMeter()
    meter.measure_model(model)
    # step 1: a large unit trains (big gradient and Adam state) saving a small input;
    # step 2: a small unit trains saving a large input.
    meter.record_activations(1_000)
    meter.record_step(100, 400_000, 800_000)
    meter.record_activations(900_000)
    meter.record_step(10, 40_000, 80_000)
    costs = meter.to_dict()
    assert costs["memory_bytes"]["gradients"] == 400_000
    assert costs["memory_bytes"]["activations"] == 900_000
    # step 1: 440 + 400,000 + 800,000 + 1,000; step 2: 440 + 40,000 + 80,000 + 900,000
    assert costs["peak_total_bytes"] == 1_201_440  # step 1; the kinds' peaks add to 2,100,440
