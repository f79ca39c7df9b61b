"""Running out of device memory mid-run: the engine halves the micro-batch, accumulates the
pieces' gradients and ends where a run that never ran out ends (same effective batch).

The failure is injected: a forward pre-hook raises PyTorch's own ``OutOfMemoryError`` for
any training batch larger than a planted limit, as a device with room for that many samples
would. ``head`` on a frozen CNN has no batch statistics in training, so the pieces' summed
gradients equal the whole batch's up to float summation order.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.engine.micro_batches import split_batch
from adaptlab.errors import AdaptlabError
from adaptlab.run import run

pytestmark = pytest.mark.slow


def _config(data, out) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy="head", out=str(out),
                     device="cpu", epochs=2, image_size=32, batch_size=4, lr=0.01)


def _limit_batch(limit: int):
    """An ``on_trainer`` callback: the model's training forward fails above ``limit``."""

    def refuse(module, args):
        if module.training and len(args[0]) > limit:
            raise torch.OutOfMemoryError(f"planted: {len(args[0])} samples do not fit")

    return lambda trainer: trainer.unwrapped.register_forward_pre_hook(refuse)


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_out_of_memory_continues_with_the_same_effective_batch(colour_folder, tmp_path,
                                                               capfd):
    reference = run(_config(colour_folder, tmp_path / "fits"), progress=False)
    squeezed = run(_config(colour_folder, tmp_path / "squeezed"), progress=False,
                   on_trainer=_limit_batch(1))

    events = _events(squeezed.run_dir)
    fallbacks = [(e["batch"], e["micro_batch"], e["pieces"]) for e in events
                 if e["event"] == "out_of_memory"]
    assert fallbacks == [(4, 2, 2), (4, 1, 4)]  # halved twice, then it fits
    assert "continuing with micro-batches of 1" in capfd.readouterr().err
    steps = [e["global_step"] for e in events if e["event"] == "step"]
    assert steps == [e["global_step"] for e in _events(reference.run_dir)
                     if e["event"] == "step"]  # the same optimizer steps

    first = load_file(str(reference.run_dir / "weights.safetensors"))
    second = load_file(str(squeezed.run_dir / "weights.safetensors"))
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 1e-5
    for split, metrics in reference.metrics["final"].items():
        assert squeezed.metrics["final"][split]["accuracy"] == metrics["accuracy"]
        assert abs(squeezed.metrics["final"][split]["loss"] - metrics["loss"]) < 1e-5


def test_out_of_memory_with_one_sample_stops_with_a_message(colour_folder, tmp_path):
    with pytest.raises(AdaptlabError, match="micro-batch of one sample"):
        run(_config(colour_folder, tmp_path / "never"), progress=False,
            on_trainer=_limit_batch(0))


def test_split_batch_slices_what_is_per_sample():
    inputs = {"input_ids": torch.arange(10).reshape(5, 2), "season": 12,
              "names": ["a", "b", "c", "d", "e"]}
    pieces = split_batch(inputs, torch.arange(5), 2)
    assert [p[1].tolist() for p in pieces] == [[0, 1, 2], [3, 4]]
    assert pieces[1][0]["input_ids"].tolist() == [[6, 7], [8, 9]]
    assert pieces[1][0]["names"] == ["d", "e"] and pieces[1][0]["season"] == 12
