"""Training batches of text grouped by length (adaptlab.data.length_grouped): every sample once
per epoch, far less padding than shuffled batches, batch mates that change between epochs, the
longest batch first; through a run, the batches trained are grouped, a run stopped mid-epoch
resumes to the uninterrupted weights, and a run recorded before the option replays shuffled."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.data.length_grouped import LengthGroupedSampler, training_order


def _lengths(count: int = 300, seed: int = 0) -> list[int]:
    """Token counts as source code has them: many short, a long tail cut at the limit."""
    rng = random.Random(seed)
    return [min(128, int(rng.lognormvariate(3.8, 0.7))) for _ in range(count)]


def _padded(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def _shuffled_batches(count: int, size: int, seed: int) -> list[list[int]]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[s:s + size] for s in range(0, count, size)]


def test_every_sample_once_longest_first_short_batch_last():
    lengths = _lengths(301)
    sampler = LengthGroupedSampler(lengths, 32, seed=7)
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        batches = sampler.batches()
        assert sorted(i for b in batches for i in b) == list(range(301))
        assert list(sampler) == [i for b in batches for i in b]
        assert [len(b) for b in batches] == [32] * 9 + [13]
        assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_far_less_padding_than_shuffled_batches():
    lengths, size = _lengths(), 32
    real = sum(lengths)
    shuffled = [_padded(lengths, _shuffled_batches(len(lengths), size, s)) for s in range(5)]
    sampler = LengthGroupedSampler(lengths, size, seed=0)
    grouped = []
    for epoch in range(1, 6):
        sampler.set_epoch(epoch)
        grouped.append(_padded(lengths, sampler.batches()))
    # Shuffled, nearly every batch holds a sample at the limit; grouped, a batch pads to a
    # length close to its own members'.
    assert min(shuffled) > 1.8 * real
    assert max(grouped) < 1.35 * real


def test_seeded_by_seed_and_epoch_and_batch_mates_change():
    lengths = _lengths()
    a, b = LengthGroupedSampler(lengths, 32, seed=3), LengthGroupedSampler(lengths, 32, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert a.batches() == b.batches()
    first = {frozenset(batch) for batch in a.batches()}
    a.set_epoch(3)
    second = {frozenset(batch) for batch in a.batches()}
    assert first != second and len(first & second) < len(first) // 2
    other = LengthGroupedSampler(lengths, 32, seed=4)
    other.set_epoch(2)
    b.set_epoch(2)
    assert other.batches() != b.batches()


def test_retrieval_pairs_and_images_are_shuffled_not_grouped():
    from adaptlab.data.text import TextDataset, TextPairDataset

    class Tokenizer:
        def __call__(self, texts, truncation=True, max_length=None):
            return {"input_ids": [t.split() for t in texts]}

    texts = TextDataset([("a b c", 0), ("a", 1)], Tokenizer(), 8)
    pairs = TextPairDataset([(("a b", "c"), 0)], Tokenizer(), 8)
    assert isinstance(training_order(texts, 2, 0, True)["sampler"], LengthGroupedSampler)
    assert training_order(texts, 2, 0, False)["shuffle"] is True
    assert training_order(pairs, 2, 0, True)["shuffle"] is True  # in-batch negatives
    assert training_order([torch.zeros(3)], 2, 0, True)["shuffle"] is True


def test_a_config_recorded_before_the_option_replays_shuffled(tmp_path):
    recorded = json.loads(RunConfig(domain="code").to_json())
    del recorded["group_by_length"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert RunConfig.from_file(tmp_path / "config.json").group_by_length is False
    assert RunConfig(domain="code").group_by_length is True


# -- through a run -----------------------------------------------------------------------------
MATHS = "    total = total * {i} + (x ** 2) / (y + {i}) - {i}\n"
TEXT = "    text = text.strip().upper().replace('a', '{i}').split(',')[0]\n"


def _write_data(path) -> None:
    rng = random.Random(0)
    rows = []
    for label, line in (("maths", MATHS), ("strings", TEXT)):
        for i in range(24):
            body = line.format(i=i) * rng.choice([0, 0, 1, 1, 2, 6])
            rows.append({"code": f"def f{i}(x, y, text):\n    total = 0\n{body}    return 1\n",
                         "label": label})
    rng.shuffle(rows)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")


class _TrainingBatches:
    """The attention masks the model trains on (training mode only)."""

    def __init__(self, model) -> None:
        self.masks: list[torch.Tensor] = []
        self.handle = model.register_forward_pre_hook(self.record)

    def record(self, module, args) -> None:
        if module.training and isinstance(args[0], dict) and "attention_mask" in args[0]:
            self.masks.append(args[0]["attention_mask"].clone())


@pytest.mark.slow
def test_a_run_trains_on_grouped_batches_and_resumes_to_the_same_weights(tmp_path):
    from adaptlab.run import run

    data = tmp_path / "code.jsonl"
    _write_data(data)

    def config(out, **changes):
        return RunConfig(domain="code", data=str(data), strategy="lora", epochs=2,
                         batch_size=4, device="cpu", out=str(tmp_path / out), **changes)

    seen: dict[str, _TrainingBatches] = {}
    reference = run(config("ref"), progress=False,
                    on_trainer=lambda t: seen.setdefault("ref", _TrainingBatches(t.unwrapped)))
    run(config("shuffled", group_by_length=False), progress=False,
        on_trainer=lambda t: seen.setdefault("off", _TrainingBatches(t.unwrapped)))

    def padding(masks):  # padded positions over real tokens, outside the code under test
        return sum(m.numel() for m in masks) / sum(int(m.sum()) for m in masks)

    assert padding(seen["ref"].masks) < 0.8 * padding(seen["off"].masks)

    holder = {}

    def stop(event):
        if event["event"] == "step" and event["global_step"] == 3:
            holder["trainer"].request_stop()

    run(config("stopped"), progress=False, subscribers=[stop],
        on_trainer=lambda t: holder.setdefault("trainer", t))
    resumed = run(RunConfig(domain="code", out=str(tmp_path / "stopped")), resume=True,
                  progress=False,
                  on_trainer=lambda t: seen.setdefault("resumed", _TrainingBatches(t.unwrapped)))
    steps_per_epoch = reference.costs["optimizer_steps"] // 2
    assert 3 < steps_per_epoch  # the stop fell mid-epoch
    widths = [m.shape for m in seen["ref"].masks]
    assert [m.shape for m in seen["resumed"].masks] == widths[3:]
    final = load_file(str(reference.run_dir / "adapter" / "adapter_model.safetensors"))
    again = load_file(str(resumed.run_dir / "adapter" / "adapter_model.safetensors"))
    assert final.keys() == again.keys() and final
    for name in final:
        assert torch.equal(final[name], again[name]), name
    assert resumed.metrics["final"] == reference.metrics["final"]
