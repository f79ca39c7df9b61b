"""The eP-ALM bridge and the docstring-generation task: only the projection and the soft token
train (a fraction under 1 % counted from the shapes), the bridge learns a planted
input -> word mapping the LM alone cannot guess, a run reloads to the same logits and the
same generated texts, other task models are refused, the demo split holds its test modules
out of training and of the LM's pre-training text, BLEU matches a hand count."""

from __future__ import annotations

import copy
import gzip
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from adaptlab.data.splits import SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.bleu import corpus_bleu, exact_match, smoothed_bleu, words

pytestmark = pytest.mark.slow

COLOURS = ["red", "blue", "green", "yellow"]
NAMES = {"train": ["paint", "fill", "tint", "shade"], "val": ["colour"], "test": ["stroke"]}


def _planted_samples(names: list[str]) -> list:
    """Code that sets a colour -> a summary naming it: only the code tells which colour."""
    pairs = [(f"def {name}_{colour[:2]}(canvas):\n    canvas.set_colour('{colour}')\n"
              f"    return canvas", f"Paint the canvas {colour}.")
             for name in names for colour in COLOURS]
    return [(pair, i) for i, pair in enumerate(pairs)]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A two-layer docstring LM pre-trained on the planted summaries (every colour equally
    often) behind their colour as context, cached under the user cache like the demo's."""
    from adaptlab_code.docstring_lm import DocstringLmSettings, cached_docstring_lm

    # contexts of 1 to 3 words, so the summary's start is not tied to one position
    texts = [(context, f"Paint the canvas {colour}.") for colour in COLOURS
             for context in (colour, f"in {colour}", f"all in {colour}")] * 4
    settings = DocstringLmSettings(layers=2, width=64, heads=4, max_tokens=16, epochs=100,
                                   batch_size=8, lr=5e-3)
    return cached_docstring_lm(settings, texts, log=lambda _: None)


@pytest.fixture(scope="module")
def planted(tiny_lm) -> SplitDataset:
    return SplitDataset(class_names=[], samples={s: _planted_samples(n) for s, n in NAMES.items()},
                        modality="text-to-text", task="generation",
                        task_options={"language_model": str(tiny_lm)})


def _loader(data: SplitDataset, split: str, backbone, batch_size: int = 16) -> DataLoader:
    dataset = make_torch_dataset(data, split, backbone, False)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate)


def _bridged(data, backbone):
    from adaptlab.tasks.registry import make_task

    task = make_task(data, backbone=backbone)
    strategy = get_strategy_class("bridge").from_options({})
    model, layer_map = task.build_model(copy.deepcopy(backbone), strategy.config)
    strategy.check_model(model, layer_map)
    return task, strategy, strategy.setup(model, layer_map)


def test_only_projection_and_token_get_gradients(planted, minilm_backbone, tiny_lm):
    task, _, model = _bridged(planted, minilm_backbone)
    model.train()
    batch, labels = next(iter(_loader(planted, "train", minilm_backbone)))
    task.loss(model(batch), labels).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"bridge.projection.weight", "bridge.projection.bias",
                         "bridge.soft_token"}
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())
    # Trainable fraction from the two models' shapes, read from their own configs.
    lm_width = json.loads((tiny_lm / "config.json").read_text())["n_embd"]
    encoder_width = minilm_backbone.module.encoder.config.hidden_size
    expected = encoder_width * lm_width + lm_width + lm_width  # weight, bias, one token
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in minilm_backbone.module.parameters()) + \
        sum(p.numel() for p in model.language_model.parameters())
    assert trainable == expected
    assert trainable / (trainable + frozen) < 0.01


def test_bridge_learns_what_the_lm_alone_cannot(planted, minilm_backbone):
    """Which colour the summary names is in the code only: the LM alone writes one summary for
    every input (at most a quarter right); the bridge, trained, names each input's colour."""
    # The bridge's projection is drawn at setup: seeded here, not by whatever tests ran before.
    torch.manual_seed(0)
    task, strategy, model = _bridged(planted, minilm_backbone)
    train = _loader(planted, "train", minilm_backbone)
    alone = model.bridge
    model.bridge = None
    lm_alone = task.evaluate(model, train)
    # The LM learnt "context [CLS] summary"; started at [CLS] with no context it may write a
    # context of its own first: the text is the summary after it, never the context's words.
    summaries = {tuple(words(f"Paint the canvas {colour}.")) for colour in COLOURS}
    written = model.generate(next(iter(train))[0]["source"])
    assert {tuple(words(text)) for text in written} <= summaries, written
    model.bridge = alone
    optimizer = torch.optim.AdamW(model.bridge.parameters(), lr=3e-2)
    torch.manual_seed(0)
    # 80 passes: at 40 one input of 16 was still wrong on some machines (loss 0.055).
    for _ in range(80):
        model.train()
        strategy.train_mode(model)
        for batch, labels in train:
            loss = task.loss(model(batch), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    trained = task.evaluate(model, train)
    held_out = task.evaluate(model, _loader(planted, "test", minilm_backbone))
    assert lm_alone["exact_match"] <= 0.25
    assert trained["exact_match"] == 1.0, trained
    assert held_out["exact_match"] >= 0.75, held_out  # an unseen function name, same colours


def test_a_sharded_model_generates_before_any_forward(planted, minilm_backbone):
    """Sharded (fsdp), the LM's embeddings belong to no block of their own: they are gathered
    by the whole model's call, which generation does not make. One process's group shards
    them as two would (each weight a sharded tensor), without a second process."""
    import torch.distributed as dist

    from adaptlab.engine.sharding import is_sharded, shard_model

    _, _, model = _bridged(planted, minilm_backbone)
    batch, _ = next(iter(_loader(planted, "test", minilm_backbone)))
    with torch.no_grad():
        whole = model.eval().generate(batch["source"])
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        shard_model(model, torch.device("cpu"))
        assert is_sharded(model)
        with torch.no_grad():
            assert model.eval().generate(batch["source"]) == whole
    finally:
        dist.destroy_process_group()


def test_run_saves_only_the_bridge_and_reloads(planted, minilm_backbone, tmp_path):
    from adaptlab.assembly import complete_config
    from adaptlab.plugins.registry import get_domain
    from adaptlab.run import config_for
    from adaptlab.run_loading import load_run
    from adaptlab.session import TrainingSession

    run_dir = tmp_path / "run"
    domain = get_domain("code")
    config = complete_config(config_for("code", dataset="docstring-generation",
                                        strategy="bridge", out=str(run_dir), epochs=1,
                                        batch_size=8, lr=1e-2, device="cpu"), domain)
    strategy = get_strategy_class("bridge").from_options({})
    TrainingSession(config, domain, planted, minilm_backbone, strategy).execute(
        run_dir, resume=False, subscribers=(), progress=False)
    assert set(load_file(str(run_dir / "weights.safetensors"))) == {
        "bridge.projection.weight", "bridge.projection.bias", "bridge.soft_token"}
    costs = json.loads((run_dir / "costs.json").read_text())
    assert costs["reload_max_abs_diff"] <= 1e-5
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"bleu", "exact_match"} <= set(metrics["final"]["test"])
    assert {"bleu", "exact_match"} <= set(metrics["baseline"]["test"])
    assert {"bleu", "exact_match"} <= set(metrics["reference"]["retrieval"]["test"])
    loaded = load_run(run_dir, device="cpu", with_data=False)
    again = loaded_task_evaluate(loaded, planted, minilm_backbone)
    assert again["bleu"] == pytest.approx(metrics["final"]["test"]["bleu"])
    assert again["exact_match"] == metrics["final"]["test"]["exact_match"]


def loaded_task_evaluate(loaded, data, backbone) -> dict:
    from adaptlab.tasks.registry import make_task

    return make_task(data, backbone=backbone).evaluate(loaded.model,
                                                       _loader(data, "test", backbone, 8))


def test_other_task_models_are_refused(minilm_backbone):
    from adaptlab.tasks.classification import build_model

    strategy = get_strategy_class("bridge").from_options({})
    model, layer_map = build_model(copy.deepcopy(minilm_backbone), 3)
    with pytest.raises(AdaptlabError, match="bridge.*ClassificationModel"):
        strategy.check_model(model, layer_map)


def _embedded_records() -> list[dict]:
    import adaptlab_code

    path = Path(adaptlab_code.__file__).parent / "demo_data" / "stdlib_functions.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("seed", [0, 1])
def test_demo_split_holds_test_modules_out(seed):
    from adaptlab_code.docstring_data import load_docstring_generation, pretraining_docstrings

    records = _embedded_records()
    module_of = {r["code"]: r["module"] for r in records}
    data = load_docstring_generation({"seed": seed})
    modules = {split: {module_of[code] for (code, _), _ in items}
               for split, items in data.samples.items()}
    assert not modules["test"] & modules["train"] and not modules["val"] & modules["train"]
    assert not modules["test"] & modules["val"] and modules["test"]
    assert sum(len(items) for items in data.samples.values()) == len(records)
    held_out = {" ".join(r["docstring"].split()) for r in records
                if r["module"] not in modules["train"]}
    trained = {" ".join(r["docstring"].split()) for r in records
               if r["module"] in modules["train"]}
    assert not {text for _, text in pretraining_docstrings(seed)} & (held_out - trained)


def test_first_sentence_is_the_summary():
    from adaptlab_code.docstring_data import first_sentence

    assert first_sentence("Return the path. Resolves links.\n\nMore.") == "Return the path."
    assert first_sentence("Open version 1.2 of the file\n  and read it.") == \
        "Open version 1.2 of the file"


def test_a_context_the_lm_writes_itself_is_not_part_of_the_text():
    from adaptlab.tasks.generation import after_last

    cls, sep = 101, 102
    assert after_last([7, 8, cls, 30, 31, sep], cls) == [30, 31, sep]
    assert after_last([cls, 7, cls, 30, sep], cls) == [30, sep]
    assert after_last([30, 31, sep], cls) == [30, 31, sep]


def test_smoothed_bleu_matches_a_hand_count():
    reference = "The cat sat on a mat"
    # 1-grams 5/6 unsmoothed; 2- to 4-grams (matches + 1) / (n-grams + 1): 4/6, 3/5, 2/4
    precisions = Fraction(5, 6) * Fraction(4, 6) * Fraction(3, 5) * Fraction(2, 4)
    full = float(precisions) ** 0.25
    assert smoothed_bleu(["the cat sat on the mat"], [reference]) == pytest.approx(full)
    # "on a mat" (3 words against 6): 3/3, (2+1)/(2+1), (1+1)/(1+1), (0+1)/(0+1);
    # penalty exp(1 - 7/4); a text with no reference word scores 0; the mean over texts
    short = math.exp(1 - 7 / 4)
    assert smoothed_bleu(["on a mat"], [reference]) == pytest.approx(short)
    assert smoothed_bleu(["dog"], [reference]) == 0.0
    assert smoothed_bleu(["the cat sat on the mat", "on a mat", "dog"], [reference] * 3) == \
        pytest.approx((full + short) / 3)
    assert corpus_bleu(["on a mat"], [reference]) == 0.0  # where corpus BLEU says nothing


def test_bleu_matches_a_hand_count():
    hypothesis, reference = "the cat sat on the mat", "The cat sat on a mat"
    # clipped matches over hypothesis n-grams: 5/6, 3/5, 2/4, 1/3; equal lengths, no penalty
    precisions = Fraction(5, 6) * Fraction(3, 5) * Fraction(2, 4) * Fraction(1, 3)
    assert corpus_bleu([hypothesis], [reference]) == pytest.approx(float(precisions) ** 0.25)
    # shorter hypothesis: brevity penalty exp(1 - 6/4); "on a mat" has no 4-gram match -> 0
    assert corpus_bleu(["cat sat on mat"], [reference]) == 0.0
    assert corpus_bleu(["the cat sat on"], [reference]) == pytest.approx(math.exp(1 - 6 / 4))
    assert exact_match(["The cat sat on a mat ."], [reference + "."]) == 1.0
    assert exact_match([hypothesis], [reference]) == 0.0
