"""Text generation from an encoded input: a frozen encoder's features, brought into a causal
language model's input embeddings by a strategy (``bridge``), prefix the target text.

Training is teacher-forced next-token loss on the target; evaluation decodes greedily (at
most ``MAX_NEW_TOKENS``) and scores BLEU and exact match. Baselines, with no adaptation at
all: the same LM without the encoder (it starts from its start token alone, so it writes the
one text it finds likeliest for every input), and retrieval (the target of the training input
nearest by the frozen encoder's pooled features).

Samples are ``((source text, target text), index)`` (modality ``text-to-text``). A batch holds
the source as the encoder's tokens and the target as UTF-8 bytes, which the model tokenizes
with its LM's own tokenizer: any LM, whatever its vocabulary, reads the same batches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adaptlab.backbones.causal_lm import CausalLm, language_model_for
from adaptlab.data.text import TextDataset
from adaptlab.data.torch_datasets import register_modality
from adaptlab.errors import AdaptlabError
from adaptlab.tasks.base import Task, TaskOptions, call_backbone, move_to
from adaptlab.tasks.bleu import generation_metrics
from adaptlab.tasks.registry import register_task

MAX_NEW_TOKENS = 24
MAX_TARGET_TOKENS = 48  # teacher-forced target length (start and end tokens included)


def encode_texts(texts: list[str]) -> torch.Tensor:
    """UTF-8 bytes of each text, zero-padded: ``[B, longest]`` uint8 (text holds no NUL)."""
    encoded = [text.encode("utf-8") for text in texts]
    out = torch.zeros((len(encoded), max((len(e) for e in encoded), default=0)),
                      dtype=torch.uint8)
    for row, data in enumerate(encoded):
        out[row, :len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    return out


def decode_texts(encoded: torch.Tensor) -> list[str]:
    """The texts :func:`encode_texts` packed."""
    return [bytes(row.cpu().tolist()).rstrip(b"\0").decode("utf-8") for row in encoded]


class TextToTextDataset(TextDataset):
    """``((source, target), index)``: the source tokenized for the encoder, the target as
    bytes (see the module docstring)."""

    def collate(self, batch):
        pairs, labels = zip(*batch, strict=True)
        sources, targets = zip(*pairs, strict=True)
        return ({"source": self.tokenize(list(sources)), "target": encode_texts(list(targets))},
                torch.tensor(labels))


@register_modality("text-to-text")
def _text_to_text_dataset(samples, backbone, train: bool, options: dict):
    if backbone.tokenizer is None:
        raise AdaptlabError(f"backbone {backbone.name!r} reads no text (it has no tokenizer)")
    return TextToTextDataset(samples, backbone.tokenizer, backbone.max_length)


class EncoderToLm(nn.Module):
    """An encoder and a causal LM. ``bridge`` (None until a strategy sets one) maps the
    encoder's pooled features ``[B, encoder_width]`` to prefix embeddings ``[B, k, lm_width]``
    the LM reads before the target's start token; without it the LM reads the start token
    alone.

    ``forward(batch)`` returns ``(logits, labels)``: next-token logits over the target's
    positions and the tokens they predict (-100 where padding)."""

    def __init__(self, encoder: nn.Module, encoder_width: int, language_model: CausalLm) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_width = encoder_width
        self.language_model = language_model.module
        self.lm = language_model  # tokenizer and special tokens (its module is the one above)
        self.bridge: nn.Module | None = None

    @property
    def lm_width(self) -> int:
        return self.lm.width

    def prefix(self, source) -> torch.Tensor | None:
        if self.bridge is None:
            return None
        return self.bridge(call_backbone(self.encoder, source))

    def target_tokens(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start token, the target's tokens, end token; right-padded ids and mask."""
        tokenizer = self.lm.tokenizer
        pieces = tokenizer(decode_texts(target), add_special_tokens=False, truncation=True,
                           max_length=MAX_TARGET_TOKENS - 2)["input_ids"]
        rows = [[self.lm.bos_token_id, *ids, self.lm.eos_token_id] for ids in pieces]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        device = target.device
        return ids.to(device), mask.to(device)

    def _with_prefix(self, source, embeds: torch.Tensor, mask: torch.Tensor):
        prefix = self.prefix(source)
        if prefix is None:
            return embeds, mask, 0
        prefix = prefix.to(embeds.dtype)
        ones = torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device)
        return torch.cat([prefix, embeds], 1), torch.cat([ones, mask], 1), prefix.shape[1]

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.target_tokens(batch["target"])
        embeds = self.language_model.get_input_embeddings()(ids)
        embeds, full_mask, k = self._with_prefix(batch["source"], embeds, mask)
        logits = self.language_model(inputs_embeds=embeds, attention_mask=full_mask).logits
        # position k + j reads target token j and predicts token j + 1
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        # A tensor of its own rather than a view: the loss copies it to flatten it anyway, and
        # a sharded model (fsdp) warns that an in-place change to a view would skip its
        # backward hook.
        return logits[:, k:-1].contiguous(), labels

    @torch.no_grad()
    def generate(self, source, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        """Greedy continuation of [prefix, start token] for each input."""
        # Sharded (fsdp), the weights this module holds outside the repeated blocks (the
        # embeddings) are gathered by its own call, which generation does not make.
        if hasattr(self, "unshard"):
            self.unshard()
        rows = len(next(iter(source.values())))
        device = next(self.language_model.parameters()).device
        start = torch.full((rows, 1), self.lm.bos_token_id, dtype=torch.long, device=device)
        embeds = self.language_model.get_input_embeddings()(start)
        embeds, mask, _ = self._with_prefix(source, embeds, torch.ones_like(start))
        tokenizer = self.lm.tokenizer
        out = self.language_model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, eos_token_id=self.lm.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        start = self.lm.bos_token_id
        # GPT-2's start token is also its end and padding token: nothing to cut there.
        cut = start not in (self.lm.eos_token_id, tokenizer.pad_token_id)
        texts = [after_last(row.tolist(), start) if cut else row.tolist() for row in out]
        return [text.strip() for text in tokenizer.batch_decode(texts, skip_special_tokens=True)]


def after_last(ids: list[int], start: int) -> list[int]:
    """The tokens after the last ``start`` token, or all of them where there is none.

    An LM pre-trained on "context [start] text" (the plugin's docstring LM) that reads no
    context (the LM alone, or a bridge's prefix it does not take for one) may write a context
    of its own, then a start token, then the text: the text is what follows."""
    return ids[len(ids) - ids[::-1].index(start):] if start in ids else ids


def sequence_loss(outputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    logits, labels = outputs
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


@register_task
class GenerationTask(Task):
    """Encoder -> causal LM generation; BLEU (monitored) and exact match."""

    name = "generation"
    evaluation_replays = False  # evaluate calls generate
    monitor = "bleu"
    explain_refusal = ("generation runs cannot be explained yet (their outputs are token "
                       "sequences, not scores)")
    prediction_writer = "adaptlab.predict.generation:GenerationWriter"
    graph_export_refusal = (
        "generation runs decode token by token (a Python loop around the language model, "
        "which reads its own previous output), not one traced graph; export them with "
        "--format safetensors and decode with the loaded model's generate()")

    def __init__(self, task_options: dict) -> None:
        self.task_options = dict(task_options)

    @classmethod
    def from_data(cls, data, backbone, options: TaskOptions) -> GenerationTask:
        if backbone is not None and backbone.tokenizer is None:
            raise AdaptlabError(f"generation reads text; backbone {backbone.name!r} has no "
                                "tokenizer")
        return cls(data.task_options)

    def build_model(self, backbone, head_options):
        model = EncoderToLm(backbone.module, backbone.num_features,
                            language_model_for(self.task_options))
        return model, backbone.layer_map.prefixed("encoder")

    def loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        return sequence_loss(outputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader) -> dict:
        model.eval()
        hypotheses, references = [], []
        loss_sum, tokens = 0.0, 0
        for batch, _ in loader:
            logits, labels = model(batch)
            counted = int((labels != -100).sum())
            loss_sum += float(sequence_loss((logits, labels))) * counted
            tokens += counted
            hypotheses += model.generate(batch["source"])
            references += decode_texts(batch["target"])
        metrics = generation_metrics(hypotheses, references)
        metrics["loss"] = loss_sum / max(tokens, 1)
        return metrics

    def baselines(self, model: nn.Module, loaders: dict, source_loader, device) -> dict:
        model.to(device)
        bridge, model.bridge = model.bridge, None  # the LM from its start token alone
        try:
            alone = {split: self.evaluate(model, _on(loader, device))
                     for split, loader in loaders.items()}
        finally:
            model.bridge = bridge
        result = {"language_model_alone": alone,
                  "retrieval": retrieval_baseline(model.encoder, loaders, device)}
        model.to("cpu")
        return result

    def headline(self, metrics: dict) -> str:
        test, base = metrics["final"]["test"], metrics["baseline"]["test"]
        retrieval = metrics.get("reference", {}).get("retrieval", {}).get("test", {})
        smoothed = ""
        if "bleu_smoothed" in test and "bleu_smoothed" in base:  # runs before it was added
            smoothed = (f", smoothed {test['bleu_smoothed']:.3f} (LM alone "
                        f"{base['bleu_smoothed']:.3f}, retrieval "
                        f"{retrieval.get('bleu_smoothed', float('nan')):.3f})")
        return (f"held-out BLEU {test['bleu']:.3f} (LM alone {base['bleu']:.3f}, retrieval "
                f"{retrieval.get('bleu', float('nan')):.3f}){smoothed}, exact match "
                f"{test['exact_match']:.3f} (LM alone {base['exact_match']:.3f})")


@torch.no_grad()
def _pooled_and_targets(encoder: nn.Module, loader, device) -> tuple[torch.Tensor, list[str]]:
    encoder.eval()
    features, targets = [], []
    for batch, _ in loader:
        features.append(F.normalize(call_backbone(encoder, move_to(batch["source"], device))
                                    .float(), dim=-1).cpu())
        targets += decode_texts(batch["target"])
    return torch.cat(features), targets


def retrieval_baseline(encoder: nn.Module, loaders: dict, device) -> dict[str, dict]:
    """Each input gets the target of the training input most cosine-similar to it by the
    frozen encoder's pooled features (on the training split, another input than itself)."""
    train_features, train_targets = _pooled_and_targets(encoder, loaders["train"], device)
    out = {}
    for split, loader in loaders.items():
        features, targets = (train_features, train_targets) if split == "train" else \
            _pooled_and_targets(encoder, loader, device)
        similarity = features @ train_features.T
        if split == "train":
            similarity.fill_diagonal_(-float("inf"))
        nearest = similarity.argmax(dim=1).tolist()
        out[split] = generation_metrics([train_targets[i] for i in nearest], targets)
    return out


def _on(loader, device):
    for batch, labels in loader:
        yield move_to(batch, device), labels
