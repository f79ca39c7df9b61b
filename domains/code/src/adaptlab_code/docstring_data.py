"""Docstring generation from the embedded standard-library functions: the function's code
without its docstring -> the docstring's first sentence.

The split is by module, seeded: every function of a test (or validation) module is held
out, so a test function never shares its module with a training one. Functions of one
module share their vocabulary and phrasing ("Return the ...", a class's own nouns), so a
split by function would let the retrieval baseline copy a sibling's docstring and would
measure memory of the module rather than generation for unseen code.

The same split decides the language model's pre-training text (:mod:`adaptlab_code.
docstring_lm`): the full docstrings of the training modules only.
"""

from __future__ import annotations

import random
import re

from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError
from adaptlab_code.datasets import _records

VAL_MODULES = 4
TEST_MODULES = 5
# The plugin's pre-trained docstring LM (a folder of safetensors + config + tokenizer),
# named as a reference the generation task resolves; a hub id or a local folder of a causal
# LM can stand in its place (``language_model`` option of the loader).
DEFAULT_LANGUAGE_MODEL = "adaptlab_code.docstring_lm:docstring_lm_folder"


def first_sentence(docstring: str) -> str:
    """The docstring's summary: its first line, cut after the first sentence's full stop."""
    line = docstring.strip().splitlines()[0].strip()
    match = re.search(r"\.(\s|$)", line)
    return line[:match.start() + 1] if match else line


def split_modules(modules: list[str], seed: int) -> dict[str, list[str]]:
    """Module names per split, drawn by a generator seeded with ``seed``."""
    if len(modules) < VAL_MODULES + TEST_MODULES + 1:
        raise AdaptlabError(f"docstring-generation needs at least "
                            f"{VAL_MODULES + TEST_MODULES + 1} modules, found {len(modules)}")
    order = sorted(modules)
    random.Random(seed).shuffle(order)
    return {"test": sorted(order[:TEST_MODULES]),
            "val": sorted(order[TEST_MODULES:TEST_MODULES + VAL_MODULES]),
            "train": sorted(order[TEST_MODULES + VAL_MODULES:])}


def functions_by_split(seed: int) -> dict[str, list[dict]]:
    """The embedded function records, grouped by the split their module falls in."""
    records = _records("stdlib_functions.jsonl.gz")
    modules = split_modules(sorted({r["module"] for r in records}), seed)
    return {split: [r for r in records if r["module"] in names]
            for split, names in modules.items()}


def pretraining_docstrings(seed: int) -> list[tuple[str, str]]:
    """``(function name in words, full docstring)`` of the training modules' functions: the
    text the plugin's language model learns from, none of it from validation or test."""
    return [(r["name"].replace("_", " ").strip(), " ".join(r["docstring"].split()))
            for r in functions_by_split(seed)["train"]]


def load_docstring_generation(options: dict) -> SplitDataset:
    """``((code, first sentence), index)`` samples split by module; ``options``: ``seed``,
    optionally ``language_model`` (a hub id or local folder of a causal LM to use instead of
    the plugin's own)."""
    seed = int(options.get("seed", 0))
    by_split = functions_by_split(seed)
    samples = {split: [((r["code"], first_sentence(r["docstring"])), i)
                       for i, r in enumerate(records)]
               for split, records in by_split.items()}
    language_model = options.get("language_model")
    task_options = ({"language_model": str(language_model)} if language_model else
                    {"language_model_builder": DEFAULT_LANGUAGE_MODEL,
                     "language_model_options": {"seed": seed}})
    modules = {split: sorted({r["module"] for r in records}) for split, records in by_split.items()}
    return SplitDataset(class_names=[], samples=samples, modality="text-to-text", task="generation",
                        source="Python standard library (split by module: test "
                               f"{', '.join(modules['test'])})",
                        task_options=task_options)
