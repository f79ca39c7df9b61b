"""Data with a planted signal, per modality, and small models trained on it.

The class of every item is decided by the planted part alone (a bright patch, one word, a
bump in a time window); everything else is noise. A model that learnt the task can only
look there, so its attributions must too.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from adaptlab.backbones.backbone import Preprocessing
from adaptlab.data.series import LabelledSeriesDataset, Series, SeriesWindow

IMAGE_SIDE = 32
PATCH = (slice(4, 12), slice(20, 28))  # 64 of 1024 pixels: 6.25 % of the image
SERIES_LENGTH, SERIES_CONTEXT = 96, 128
BUMP = slice(60, 72)  # 12 of 96 observed steps: 12.5 %
WORDS = ("river tree house green small light water stone paper window table chair road "
         "cloud music dance happy quiet garden yellow").split()
PLANTED_WORD = "zebra"


def train(model: nn.Module, batches, epochs: int, lr: float = 3e-3) -> nn.Module:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for inputs, labels in batches():
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, inputs, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs).argmax(1) == labels).float().mean())


# -- images -------------------------------------------------------------------------------
def planted_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, IMAGE_SIDE, IMAGE_SIDE, generator=generator)
    labels = torch.arange(count) % 2
    images[labels == 1, :, PATCH[0], PATCH[1]] += 2.5
    return images, labels


def image_model() -> tuple[nn.Module, SimpleNamespace]:
    """A timm ResNet (its in-place ReLUs and residual adds are what break DeepExplainer)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    images, labels = planted_images(256, seed=0)

    def batches():
        order = torch.randperm(len(images))
        for start in range(0, len(images), 32):
            chunk = order[start:start + 32]
            yield images[chunk], labels[chunk]

    train(model, batches, epochs=4)
    backbone = SimpleNamespace(preprocessing=Preprocessing((3, IMAGE_SIDE, IMAGE_SIDE),
                                                           (0.5,) * 3, (0.25,) * 3))
    return model, backbone


def patch_mask() -> torch.Tensor:
    mask = torch.zeros(IMAGE_SIDE, IMAGE_SIDE, dtype=torch.bool)
    mask[PATCH] = True
    return mask


# -- tokens -------------------------------------------------------------------------------
def planted_texts(count: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        words = list(rng.choice(WORDS, size=int(rng.integers(8, 13))))
        label = i % 2
        if label:
            words[int(rng.integers(0, len(words)))] = PLANTED_WORD
        out.append((" ".join(words), label))
    return out


class TokenClassifier(nn.Module):
    """A small BERT under adaptlab's mean-pooled encoder, with a linear head."""

    def __init__(self, tokenizer) -> None:
        from transformers import BertConfig, BertModel

        from adaptlab.backbones.hf_encoders import MeanPooledEncoder

        super().__init__()
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64)
        self.backbone = MeanPooledEncoder(BertModel(config))
        self.task_head = nn.Linear(32, 2)

    def forward(self, inputs) -> torch.Tensor:
        return self.task_head(self.backbone(**inputs))


def token_model():
    from transformers import AutoTokenizer

    from adaptlab.backbones.hf_encoders import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    model = TokenClassifier(tokenizer)
    samples = planted_texts(400, seed=0)

    def batches():
        order = np.random.default_rng(len(samples)).permutation(len(samples))
        for start in range(0, len(samples), 32):
            chunk = [samples[i] for i in order[start:start + 32]]
            encoded = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
            yield ({"input_ids": encoded["input_ids"],
                    "attention_mask": encoded["attention_mask"]},
                   torch.tensor([label for _, label in chunk]))

    train(model, batches, epochs=6)
    return model, SimpleNamespace(tokenizer=tokenizer, max_length=64)


# -- series -------------------------------------------------------------------------------
def planted_series(count: int, seed: int) -> LabelledSeriesDataset:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        values = rng.normal(0.0, 1.0, SERIES_LENGTH).astype(np.float32)
        label = i % 2
        if label:
            values[BUMP] += 3.0
        series = Series(f"s{i}", values)
        samples.append((SeriesWindow(series, SERIES_LENGTH, 0), label))
    return LabelledSeriesDataset(samples, SERIES_CONTEXT)


class SeriesClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, kernel_size=5, padding=2)
        self.head = nn.Linear(16, 2)

    def forward(self, batch) -> torch.Tensor:
        x = (batch["context"] * batch["observed"]).unsqueeze(1)
        return self.head(torch.relu(self.conv(x)).amax(dim=2))


def series_model():
    torch.manual_seed(0)
    dataset = planted_series(256, seed=0)
    items = [dataset[i] for i in range(len(dataset))]
    model = SeriesClassifier()

    def batches():
        order = torch.randperm(len(items))
        for start in range(0, len(items), 32):
            chunk = [items[int(i)] for i in order[start:start + 32]]
            inputs = {key: torch.stack([c[0][key] for c in chunk]) for key in chunk[0][0]}
            yield inputs, torch.tensor([c[1] for c in chunk])

    train(model, batches, epochs=8)
    return model, SimpleNamespace(series=None)


def share(features: torch.Tensor, region: torch.Tensor, eligible: torch.Tensor | None = None
          ) -> float:
    """The share of |attribution| that falls on ``region`` (among eligible features)."""
    mass = features.abs()
    if eligible is not None:
        mass = mass * eligible
    return float(mass[region].sum() / mass.sum())
