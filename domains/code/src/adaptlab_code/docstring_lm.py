"""The plugin's small causal language model of docstrings, pre-trained here and cached.

No pre-trained causal LM installs offline, so the docstring-generation demo brings its own: a
Hugging Face GPT-2 (2 layers, width 128 by default) over a WordPiece vocabulary cut from
MiniLM's to the pieces docstrings use ([CLS] starts a text, [SEP] ends it). It learns from the
training modules' full docstrings only
(:func:`adaptlab_code.docstring_data.pretraining_docstrings`), never from validation or test.

The result is a plain model folder (``config.json``, ``model.safetensors``, the tokenizer's
files; no pickle) under ``$ADAPTLAB_CACHE/language_models/``, keyed by a hash of the settings,
the text and the vocabulary: it trains once (a few minutes on two CPU cores) and is reused.
Being a model folder, it loads as any hub causal LM does
(:func:`adaptlab.backbones.causal_lm.load_causal_lm`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptlab.errors import AdaptlabError

CONTEXT_TOKENS = 8  # of a text's context (see encode_pairs)


@dataclass(frozen=True)
class DocstringLmSettings:
    """The LM's shape and its pre-training; every field is part of the cache key."""

    layers: int = 2
    width: int = 128
    heads: int = 4
    max_tokens: int = 48  # per docstring (longer ones are cut)
    epochs: int = 8
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0  # the data split's seed and the training seed

    def gpt2_config(self, vocab_size: int, bos: int, eos: int, pad: int):
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=self.width,
                          n_layer=self.layers, n_head=self.heads, bos_token_id=bos,
                          eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)


def docstring_vocabulary(pairs: list[tuple[str, str]], encoder_tokenizer) -> list[str]:
    """The LM's word pieces: MiniLM's own, restricted to those the pre-training text uses
    plus every printable ASCII character (alone and as a ``##`` continuation), so any text
    still tokenizes; in MiniLM's order. A softmax over ~3k pieces instead of MiniLM's 30,522
    is what makes pre-training fit in minutes on two CPU cores."""
    vocab = encoder_tokenizer.get_vocab()
    texts = [part for pair in pairs for part in pair]
    used = {token for ids in encoder_tokenizer(texts)["input_ids"]
            for token in encoder_tokenizer.convert_ids_to_tokens(ids)}
    characters = {c for c in map(chr, range(33, 127))} | {f"##{c}" for c in map(chr, range(33, 127))}
    specials = set(encoder_tokenizer.all_special_tokens)
    keep = (used | characters | specials) & set(vocab)
    return sorted(keep, key=vocab.__getitem__)


def docstring_tokenizer(pairs: list[tuple[str, str]], encoder_tokenizer, folder: Path):
    """A lower-casing WordPiece tokenizer over :func:`docstring_vocabulary`, written to and
    read from ``folder`` (a BERT tokenizer: [CLS] text [SEP])."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(docstring_vocabulary(pairs, encoder_tokenizer))
                                      + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


def cache_key(settings: DocstringLmSettings, pairs: list[tuple[str, str]],
              vocab: dict[str, int]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    digest.update(json.dumps(pairs).encode())
    digest.update(json.dumps(sorted(vocab.items())).encode())
    return digest.hexdigest()[:16]


def pretrain(settings: DocstringLmSettings, pairs: list[tuple[str, str]], tokenizer, log=None):
    """A fresh GPT-2 trained on ``(context, text)`` pairs (teacher-forced next-token loss,
    :func:`encode_pairs`), seeded."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(settings.seed)
    model = GPT2LMHeadModel(settings.gpt2_config(len(tokenizer), tokenizer.cls_token_id,
                                                 tokenizer.sep_token_id, tokenizer.pad_token_id))
    encoded = encode_pairs(pairs, tokenizer, settings.max_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    steps = settings.epochs * math.ceil(len(encoded) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    order = torch.Generator().manual_seed(settings.seed)
    model.train()
    for epoch in range(settings.epochs):
        total, count = 0.0, 0
        rows = [encoded[i] for i in torch.randperm(len(encoded), generator=order).tolist()]
        for start in range(0, len(rows), settings.batch_size):
            batch = rows[start:start + settings.batch_size]
            ids, labels, mask = _padded(batch, tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        if log is not None:
            log(f"docstring LM epoch {epoch + 1}/{settings.epochs}: loss {total / count:.3f}")
    return model.eval()


def encode_pairs(pairs: list[tuple[str, str]], tokenizer, max_tokens: int
                 ) -> list[list[int]]:
    """``context [CLS] text [SEP]`` token ids for each ``(context, text)`` pair.

    The context (the function's name, in words) stands before the start token where the
    bridge's prefix will stand: an LM trained on independent texts alone learns to ignore
    whatever precedes [CLS], and a bridge could then not steer it. Trained so, it learns to
    write a docstring about what precedes it."""
    out = []
    for context, text in pairs:
        before = tokenizer(context, add_special_tokens=False)["input_ids"][:CONTEXT_TOKENS]
        out.append(before + tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"])
    return out


def _padded(batch: list[list[int]], pad: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return ids, ids.masked_fill(mask == 0, -100), mask


def cached_docstring_lm(settings: DocstringLmSettings, pairs: list[tuple[str, str]],
                        cache: Path | None = None, log=None) -> Path:
    """The folder of the LM ``settings`` and ``(context, text)`` ``pairs`` define: trained on first use, then
    reused. The folder appears complete or not at all (built aside, then renamed)."""
    from transformers import AutoTokenizer

    from adaptlab.backbones.hf_encoders import minilm_path
    from adaptlab.transfer.source_cache import cache_root

    if not pairs:
        raise AdaptlabError("docstring LM: no pre-training text")
    # Off by name: transformers' default (None) would prompt to run a folder's own code.
    encoder_tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), trust_remote_code=False)
    root = Path(cache or cache_root()) / "language_models"
    key = cache_key(settings, pairs, encoder_tokenizer.get_vocab())
    folder = root / f"docstring-lm-{key}"
    if (folder / "config.json").is_file():
        return folder
    (log or _stderr)(f"pre-training the docstring LM on {len(pairs)} docstrings "
                     f"(cached in {folder})")
    staging = root / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = docstring_tokenizer(pairs, encoder_tokenizer, staging)
    model = pretrain(settings, pairs, tokenizer, log=log or _stderr)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "pretraining.json").write_text(json.dumps(
        {"settings": dataclasses.asdict(settings), "texts": len(pairs)}, indent=1) + "\n")
    try:
        os.replace(staging, folder)
    except OSError:  # another process finished the same folder first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def docstring_lm_folder(options: dict) -> Path:
    """The default LM of the docstring-generation dataset (``options``: ``seed``, the data
    split's), trained with :class:`DocstringLmSettings`' defaults."""
    from adaptlab_code.docstring_data import pretraining_docstrings

    seed = int(options.get("seed", 0))
    return cached_docstring_lm(DocstringLmSettings(seed=seed), pretraining_docstrings(seed))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
