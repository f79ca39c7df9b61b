"""Engine behaviour: early stopping, gradient accumulation, events, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.engine.atomic import atomic_write_with
from adaptlab.run import run
from adaptlab.tasks.classification import class_weights

pytestmark = pytest.mark.slow


def _config(data, out, **changes) -> RunConfig:
    values = dict(domain="wildlife", data=str(data), strategy="head", out=str(out), device="cpu",
                  epochs=2, image_size=64, batch_size=8, lr=3e-3)
    values.update(changes)
    return RunConfig(**values)


def test_early_stopping_ends_when_validation_stops_improving(tmp_path, colour_folder):
    # A learning rate of 1e-9 leaves the weights (and so the validation score) unchanged.
    result = run(_config(colour_folder, tmp_path / "r", epochs=6, lr=1e-9,
                         early_stopping_patience=2), progress=False)
    assert result.metrics["stopped_early"] is True
    assert result.metrics["epochs_run"] == 3  # best at 1, then two epochs without improvement
    assert len(result.metrics["history"]) == 3


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, colour_folder):
    big = run(_config(colour_folder, tmp_path / "big", batch_size=8, grad_accum=1),
              progress=False)
    accumulated = run(_config(colour_folder, tmp_path / "acc", batch_size=4, grad_accum=2),
                      progress=False)
    a = load_file(str(big.run_dir / "weights.safetensors"))
    b = load_file(str(accumulated.run_dir / "weights.safetensors"))
    assert a.keys() == b.keys() == {"task_head.weight", "task_head.bias"}
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_events_reach_subscribers_and_the_jsonl_file(tmp_path, colour_folder):
    seen = []
    result = run(_config(colour_folder, tmp_path / "r"), progress=False,
                 subscribers=[seen.append])
    logged = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text()
              .splitlines()]
    assert [e["event"] for e in seen] == [e["event"] for e in logged]
    kinds = [e["event"] for e in logged]
    assert kinds.count("epoch_end") == 2 and kinds.count("checkpoint") == 2
    steps = [e for e in logged if e["event"] == "step"]
    rates = [e["lr"] for e in steps]
    assert max(rates) <= 3e-3 and rates[-1] < max(rates)  # the cosine schedule decays
    assert all(isinstance(e["loss"], float) for e in steps)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def failing_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_with(target, failing_write)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_balanced_class_weights():
    weights = class_weights([0, 0, 0, 1], num_classes=3)
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


def test_warmup_then_cosine_schedule():
    from adaptlab.engine.schedule import warmup_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_schedule(optimizer, "cosine", total_steps=10, warmup_steps=3)
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[:4] == sorted(rates[:4]) and rates[3] == pytest.approx(1.0)
    assert rates[3:] == sorted(rates[3:], reverse=True) and rates[-1] < 0.05


def test_a_trainer_without_evaluation_splits_trains_and_fit_names_the_missing_val(tmp_path):
    """Accelerate's ``prepare`` hands a single loader back bare: a Trainer given only a
    training loader (the engine-overhead benchmark's) still trains, and ``fit``, which picks
    the best epoch on val, refuses by name instead of failing on a missing key."""
    import timm
    from torch.utils.data import DataLoader, TensorDataset

    from adaptlab.backbones.layer_map import layer_map_from_timm
    from adaptlab.costs.meter import CostMeter
    from adaptlab.engine.accelerator import make_accelerator
    from adaptlab.engine.events import EventBus
    from adaptlab.engine.train_state import TrainSettings
    from adaptlab.engine.trainer import Trainer
    from adaptlab.errors import AdaptlabError
    from adaptlab.strategies.base import StrategyConfig
    from adaptlab.strategies.full import FullFineTuning
    from adaptlab.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    strategy = FullFineTuning(StrategyConfig())
    model = strategy.setup(model, layer_map_from_timm(model))
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    meter = CostMeter(device="cpu")
    trainer = Trainer(model=model, strategy=strategy, task=ClassificationTask(["a", "b", "c"]),
                      settings=TrainSettings(epochs=1, lr=1e-3, weight_decay=0.0,
                                             warmup_ratio=0.0, schedule="constant"),
                      train_loader=DataLoader(data, batch_size=4), eval_loaders={},
                      run_dir=tmp_path, bus=EventBus(), accelerator=make_accelerator("cpu", "no", 1),
                      meter=meter)
    trainer._train_one_epoch()
    assert meter.train_samples == len(data)
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters()
               if name.startswith("fc."))
    with pytest.raises(AdaptlabError, match="'val' evaluation loader.*none"):
        trainer.fit()
