"""Evaluation passes run text in batches of similar length (adaptlab.engine.length_order), yet
every metric stays the in-order one; the few-shot baseline featurises each split once; the
round-trip check runs the trained model once, mixed precision included."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from adaptlab.data.splits import SPLITS, SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.tasks.classification import build_model
from adaptlab.tasks.registry import make_task

BATCH = 4
CLASSES = ("maths", "strings", "files")
LINES = {"maths": "    total = total * {i} + (x ** 2) / (y + {i}) - {i}\n",
         "strings": "    text = text.strip().upper().replace('a', '{i}').split(',')[0]\n",
         "files": "    with open(path) as handle:\n        total += len(handle.read({i}))\n"}


def _samples(per_class: int, seed: int) -> list[tuple[str, int]]:
    """Unequal classes (3:2:1, so balanced class weights differ) of code from about 15 to
    100 tokens, shuffled: in order, most batches hold a long sample."""
    items = []
    for label, name in enumerate(CLASSES):
        for i in range(per_class * (3 - label)):
            lines = (3 * i + 2 * label + seed) % 5
            items.append((f"def f{i}(x, y, text, path):\n    total = 0\n"
                          + LINES[name].format(i=i) * lines + "    return total\n", label))
    random.Random(seed).shuffle(items)
    return items


def _data() -> SplitDataset:
    return SplitDataset(list(CLASSES), {"train": _samples(1, 0), "val": _samples(1, 1),
                                        "test": _samples(1, 2)},
                        modality="text", task="classification")


def _loaders(data, backbone) -> dict[str, DataLoader]:
    """The session's evaluation loaders: in order, per-batch padding."""
    datasets = {split: make_torch_dataset(data, split, backbone, False) for split in SPLITS}
    return {split: DataLoader(dataset, batch_size=BATCH, shuffle=False,
                              collate_fn=dataset.collate) for split, dataset in datasets.items()}


def _token_counts(dataset) -> list[int]:
    return [len(dataset.tokenizer(text, truncation=True, max_length=dataset.max_length)
                ["input_ids"]) for text, _ in dataset.samples]


def _widths(counts: list[int], order: list[int], batch: int = BATCH) -> list[int]:
    """The padded width of each batch of ``batch`` samples taken in ``order``."""
    return [max(counts[i] for i in order[s:s + batch]) for s in range(0, len(order), batch)]


def _by_length(counts: list[int]) -> list[int]:
    return sorted(range(len(counts)), key=lambda i: -counts[i])


def _word_embeddings(model: nn.Module, tokenizer) -> nn.Embedding:
    return next(m for m in model.modules()
                if isinstance(m, nn.Embedding) and m.num_embeddings == len(tokenizer))


def _record_eval_widths(model: nn.Module, tokenizer, widths: list[int]):
    """Every forward in eval mode appends its batch's padded width to ``widths``."""
    def record(module, args):
        if not module.training:
            widths.append(int(args[0].shape[1]))
    return _word_embeddings(model, tokenizer).register_forward_pre_hook(record)


def _floats(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_floats(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and value is not None:
            out[prefix + key] = float(value)
    return out


def _assert_close(actual: dict, expected: dict, tolerance: float = 1e-6) -> None:
    """Equal up to float32 rounding: batches of other widths run other matrix shapes, whose
    sums round differently by CPU (a loss of 11.05 moved by 5e-6 on one machine); relative
    1e-5 (1.1e-4 on that loss) stays below what reading out of order changes (over 1e-3)."""
    actual, expected = _floats(actual), _floats(expected)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-5, abs=tolerance), key


def test_baseline_featurises_each_split_once_in_length_order_with_in_order_metrics(
        minilm_backbone):
    data = _data()
    loaders = _loaders(data, minilm_backbone)
    counts = {split: _token_counts(loaders[split].dataset) for split in SPLITS}
    expected_widths = [w for split in SPLITS
                       for w in _widths(counts[split], _by_length(counts[split]))]
    in_order_widths = [w for split in SPLITS
                       for w in _widths(counts[split], list(range(len(counts[split]))))]
    # The planted data pad less by length than in order, so the two are told apart.
    assert sum(expected_widths) < sum(in_order_widths)
    model, _ = build_model(minilm_backbone, len(CLASSES))
    task = make_task(data, "balanced", minilm_backbone)
    widths: list[int] = []
    handle = _record_eval_widths(model, minilm_backbone.tokenizer, widths)
    try:
        baseline = task.baselines(model, loaders, None, "cpu")["fewshot_ncm"]
    finally:
        handle.remove()
    # One pass per split (train's features serve both its prototypes and its metrics), each
    # in batches of similar length.
    assert widths == expected_widths

    # The same baseline by a plain in-order loop over the same batches.
    features, labels = {}, {}
    module = model.backbone.eval()
    with torch.no_grad():
        for split, loader in loaders.items():
            batches = [(module(**inputs).float(), y) for inputs, y in loader]
            features[split] = nn.functional.normalize(torch.cat([f for f, _ in batches]), dim=1)
            labels[split] = torch.cat([y for _, y in batches]).numpy()
    train_y = torch.as_tensor(labels["train"])
    prototypes = nn.functional.normalize(torch.stack(
        [features["train"][train_y == c].mean(0) for c in range(len(CLASSES))]), dim=1)
    for split in SPLITS:
        similarity = (features[split] @ prototypes.T).numpy()
        predicted, truth = similarity.argmax(1), labels[split]
        assert baseline[split]["accuracy"] == pytest.approx(accuracy_score(truth, predicted),
                                                            abs=1e-6)
        assert baseline[split]["macro_f1"] == pytest.approx(
            f1_score(truth, predicted, labels=[0, 1, 2], average="macro", zero_division=0),
            abs=1e-6)
        auc = np.mean([roc_auc_score(truth == c, similarity[:, c]) for c in np.unique(truth)])
        assert baseline[split]["auc"] == pytest.approx(auc, abs=1e-6)


def test_length_ordered_evaluation_gives_the_in_order_metrics_class_weighted_loss_included(
        minilm_backbone):
    from adaptlab.engine.length_order import evaluate_in_length_order, length_ordered

    data = _data()
    loader = _loaders(data, minilm_backbone)["val"]
    model, _ = build_model(minilm_backbone, len(CLASSES))
    torch.manual_seed(0)
    with torch.no_grad():  # confident, uneven scores: a batch's weighted mean then depends on
        model.task_head.weight.normal_(0.0, 3.0)  # which samples share it
    task = make_task(data, "balanced", minilm_backbone)
    in_order = task.evaluate(model, loader)
    counts = _token_counts(loader.dataset)
    widths: list[int] = []
    handle = _record_eval_widths(model, minilm_backbone.tokenizer, widths)
    try:
        ordered = evaluate_in_length_order(task, model, loader, "cpu")
    finally:
        handle.remove()
    assert widths == _widths(counts, _by_length(counts))
    _assert_close(ordered, in_order)
    # Read in length order without the replay, the class-weighted loss changes: what the
    # replay into the loader's own batches keeps.
    leaked = task.evaluate(model, length_ordered(loader))
    assert abs(leaked["loss"] - in_order["loss"]) > 1e-3
    assert leaked["accuracy"] == pytest.approx(in_order["accuracy"])


def test_retrieval_baseline_in_length_order_equals_in_order(minilm_backbone):
    pairs = [((f"return the {word} of the values", f"def {word}(values):\n"
               + "    values = [v for v in values if v is not None]\n" * (i % 4)
               + f"    return {word}(values)\n"), i)
             for i, word in enumerate(("sum", "max", "min", "sorted", "len", "any"))]
    data = SplitDataset([], {"train": pairs[:2], "val": pairs[2:], "test": pairs},
                        modality="text-pairs", task="retrieval")
    task = make_task(data, "none", minilm_backbone)
    model, _ = task.build_model(minilm_backbone, None)
    loaders = _loaders(data, minilm_backbone)
    baseline = task.baselines(model, loaders, None, "cpu")["zeroshot_encoder"]
    for split in SPLITS:
        _assert_close(baseline[split], task.evaluate(model, loaders[split]))


def test_round_trip_check_runs_the_trained_model_once_under_mixed_precision(
        minilm_backbone, tmp_path):
    from adaptlab.backbones.hf_encoders import minilm
    from adaptlab.errors import AdaptlabError
    from adaptlab.strategies.registry import get_strategy_class
    from adaptlab.strategies.roundtrip import check_round_trip

    strategy = get_strategy_class("head").from_options({})
    model, layer_map = build_model(minilm_backbone, len(CLASSES), strategy.config)
    strategy.check(layer_map)
    trained = strategy.setup(model, layer_map)
    torch.manual_seed(0)
    with torch.no_grad():
        trained.task_head.weight.normal_(0.0, 1.0)
    strategy.save_final(trained, tmp_path)
    dataset = make_torch_dataset(_data(), "test", minilm_backbone, False)
    batch, _ = dataset.collate([dataset[i] for i in range(2)])
    calls: list[int] = []
    handle = trained.register_forward_pre_hook(lambda *_: calls.append(1))

    def check():
        return check_round_trip(
            trained, strategy, tmp_path, lambda: build_model(minilm(), len(CLASSES),
                                                             strategy.config), batch,
            lambda: torch.autocast("cpu", dtype=torch.bfloat16), mixed_precision=True)

    try:
        assert check() < 1e-2
        assert len(calls) == 1
        with torch.no_grad():  # weights that no longer match the saved ones still fail it
            trained.task_head.weight.neg_()
        with pytest.raises(AdaptlabError, match="reload with outputs differing"):
            check()
    finally:
        handle.remove()


@pytest.mark.slow
def test_a_runs_validation_and_final_evaluation_read_text_by_length(tmp_path):
    """Through a run: validation and the final evaluation of train and test go by length
    (the round-trip check keeps the first in-order test batch), and the metrics the run
    records are those of an in-order pass over the final weights."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(json.dumps({"code": code, "label": CLASSES[label]})
                              for code, label in _samples(3, 3)) + "\n")
    holder: dict = {}
    widths: list[int] = []

    def keep(trainer):
        holder["trainer"] = trainer
        tokenizer = trainer._plain_eval["val"].dataset.tokenizer
        holder["hook"] = _record_eval_widths(trainer.unwrapped, tokenizer, widths)

    result = run(RunConfig(domain="code", data=str(path), strategy="lora", epochs=1,
                           batch_size=2, device="cpu", out=str(tmp_path / "run")),
                 progress=False, on_trainer=keep)
    holder["hook"].remove()
    trainer = holder["trainer"]
    counts = {split: _token_counts(trainer._plain_eval[split].dataset) for split in SPLITS}
    # val after the epoch (reused at the end: the run ends on those weights), train, test,
    # then the round-trip check's in-order first test batch.
    expected = [w for split in ("val", "train", "test")
                for w in _widths(counts[split], _by_length(counts[split]), 2)]
    expected.append(_widths(counts["test"], list(range(len(counts["test"]))), 2)[0])
    assert widths == expected
    for split in SPLITS:
        in_order = trainer.task.evaluate(trainer.model, trainer.eval_loaders[split])
        _assert_close(result.metrics["final"][split], in_order)
