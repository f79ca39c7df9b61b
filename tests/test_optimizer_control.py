"""The optimizer controls dynamic strategies use: parameters added mid-run train and follow the
schedule, per-group rates, dropped state, and a checkpointed layout that rebuilds the same
optimizer (the next steps equal an uninterrupted run's)."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from adaptlab.engine.checkpoint import join_optimizer_state, split_optimizer_state
from adaptlab.engine.optimizer import OptimizerControl


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))


def _control(model: nn.Module, schedule: str = "constant", warmup: int = 0) -> OptimizerControl:
    first = list(model[0].named_parameters(prefix="0"))
    return OptimizerControl(model, [{"name": "first", "params": first, "weight_decay": 0.0}],
                            lr=0.1, schedule=schedule, total_steps=10, warmup_steps=warmup)


def _step(model: nn.Module, control: OptimizerControl, x: torch.Tensor) -> None:
    model(x).square().mean().backward()
    control.optimizer.step()
    control.scheduler.step()
    control.optimizer.zero_grad(set_to_none=True)


def test_parameters_added_mid_run_train_and_follow_the_schedule():
    model = _model()
    control = _control(model, schedule="linear", warmup=2)
    x = torch.randn(8, 4)
    for _ in range(3):
        _step(model, control, x)
    before = model[1].weight.detach().clone()
    control.add_parameters(list(model[1].named_parameters(prefix="1")), "second", lr=0.05)
    # Linear decay after 2 warm-up steps, 3 steps taken of 10: factor 1 - (3 - 2) / 8.
    assert control.group_lr("second") == 0.05 * (1 - 1 / 8)
    _step(model, control, x)
    assert not torch.equal(before, model[1].weight)
    assert control.group_lr("second") == 0.05 * (1 - 2 / 8)


def test_group_rate_and_dropped_state():
    model = _model()
    control = _control(model)
    control.set_group_lr("first", 0.02)
    assert control.optimizer.param_groups[0]["lr"] == 0.02
    _step(model, control, torch.randn(8, 4))
    assert control.optimizer.param_groups[0]["lr"] == 0.02  # the schedule keeps the new base
    assert sorted(control.params_with_state()) == ["0.bias", "0.weight"]
    model[0].weight.requires_grad_(False)
    assert control.drop_frozen() == 1
    assert control.params_with_state() == ["0.bias"]
    assert control.state_bytes() == 2 * 8 * 4 + 4  # two moments of the bias and its step


def test_a_restored_layout_continues_like_an_uninterrupted_run():
    x = torch.randn(8, 4)
    model = _model()
    control = _control(model, schedule="cosine", warmup=1)
    _step(model, control, x)
    control.add_parameters(list(model[1].named_parameters(prefix="1")), "second")
    _step(model, control, x)
    # A checkpoint, through JSON and the tensor split, as the engine writes it.
    saved_model = copy.deepcopy(model.state_dict())
    tensors, plain = split_optimizer_state(control.optimizer.state_dict())
    tensors = {k: v.clone() for k, v in tensors.items()}  # the engine writes them to disk
    layout = json.loads(json.dumps(control.layout()))
    plain = json.loads(json.dumps(plain))
    for _ in range(2):
        _step(model, control, x)

    resumed = _model()
    resumed.load_state_dict(saved_model)
    again = _control(resumed, schedule="cosine", warmup=1)
    again.restore(join_optimizer_state(tensors, plain), layout)
    for _ in range(2):
        _step(resumed, again, x)
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert again.group_lr("second") == control.group_lr("second")
