"""Corpus BLEU (Papineni et al. 2002), smoothed sentence BLEU and exact match of generated
texts.

Written here because neither sacrebleu nor torchmetrics is among the project's dependencies;
it follows torchmetrics' ``BLEUScore`` (4-gram, uniform weights, no smoothing, one reference
per text, score in [0, 1]), after lower-casing and splitting words from punctuation.
"""

from __future__ import annotations

import math
import re
from collections import Counter

MAX_ORDER = 4
_TOKEN = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """``text`` lower-cased, as words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(hyp: list[str], ref: list[str], n: int) -> tuple[int, int]:
    """(hypothesis n-grams found in the reference, clipped by its counts; hypothesis n-grams)."""
    hyp_ngrams, ref_ngrams = _ngrams(hyp, n), _ngrams(ref, n)
    return (sum(min(count, ref_ngrams[g]) for g, count in hyp_ngrams.items()),
            max(len(hyp) - n + 1, 0))


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """BLEU-4 of ``hypotheses`` against one reference each: clipped n-gram precisions summed
    over the corpus, their geometric mean, times the brevity penalty."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    hypothesis_length = reference_length = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = words(hypothesis), words(reference)
        hypothesis_length += len(hyp)
        reference_length += len(ref)
        for n in range(1, MAX_ORDER + 1):
            matched, guessed = _clipped_matches(hyp, ref, n)
            matches[n - 1] += matched
            totals[n - 1] += guessed
    if min(matches) == 0 or hypothesis_length == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / MAX_ORDER
    brevity = 1.0 if hypothesis_length > reference_length else \
        math.exp(1 - reference_length / hypothesis_length)
    return brevity * math.exp(log_precision)


def smoothed_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Sentence BLEU-4 averaged over texts, each with add-one smoothing of its 2- to 4-gram
    precisions (Lin and Och 2004) and the brevity penalty ``exp(min(0, 1 - (r + 1) / (c +
    1)))``, on this module's words: the smoothing and penalty of CodeXGLUE's code-to-text
    evaluator, the metric the code-summarisation literature reports. Corpus BLEU-4 is 0 as
    soon as no 4-gram matches anywhere, which a small LM's one-sentence summaries often
    reach; this one still ranks them."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        return 0.0
    total = 0.0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = words(hypothesis), words(reference)
        log_precision = 0.0
        for n in range(1, MAX_ORDER + 1):
            matched, guessed = _clipped_matches(hyp, ref, n)
            smooth = 1 if n > 1 else 0
            if matched + smooth == 0:
                log_precision = -math.inf  # no word of the reference: the text scores 0
                break
            log_precision += math.log((matched + smooth) / (guessed + smooth))
        if log_precision == -math.inf:
            continue
        brevity = min(0.0, 1 - (len(ref) + 1) / (len(hyp) + 1))
        total += math.exp(log_precision / MAX_ORDER + brevity)
    return total / len(references)


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of texts equal to their reference word for word (case and spacing aside)."""
    if not references:
        return 0.0
    return sum(words(h) == words(r) for h, r in zip(hypotheses, references, strict=True)) \
        / len(references)


def generation_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {"bleu": corpus_bleu(hypotheses, references),
            "bleu_smoothed": smoothed_bleu(hypotheses, references),
            "exact_match": exact_match(hypotheses, references),
            "samples": len(references)}
