"""Weight soups (Wortsman et al. 2022): the average of runs fine-tuned from the same start,
uniform or greedy, written as a run folder like any other.

>>> make_soup(["runs/a", "runs/b", "runs/c"], "runs/soup", greedy=True)  # doctest: +SKIP
PosixPath('runs/soup')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["make_soup"]


def make_soup(run_dirs: Sequence[str | Path], out: str | Path, greedy: bool = False,
              device: str | None = None) -> Path:
    """Average the finished runs in ``run_dirs`` into a new run folder ``out``.

    Uniform: every run's saved tensors averaged key by key. Greedy: runs ranked by their own
    validation score, each kept only where it improves the soup's validation score. Runs
    that did not start from the same weights (domain, backbone, its weights, transfer
    source, strategy and the options that shape its tensors) or were not trained on the same
    data are refused, naming the run and the field; nothing is written on refusal.
    """
    import time

    from adaptlab.data.splits import SPLITS
    from adaptlab.errors import AdaptlabError
    from adaptlab.soups.average import check_same_start, check_seeded_start, check_tensors, read_ingredient
    from adaptlab.soups.folder import check_out, write_soup_folder
    from adaptlab.soups.recipe import greedy_soup, open_kitchen, uniform_soup

    started = time.monotonic()
    paths, out = [Path(d) for d in run_dirs], Path(out)
    if not paths:
        raise AdaptlabError("soup: give at least one run folder")
    check_out(out, paths)
    ingredients = [read_ingredient(path) for path in paths]
    check_same_start(ingredients)
    kitchen = open_kitchen(paths[0], device)
    check_seeded_start(ingredients, kitchen.data, kitchen.start)
    check_tensors(kitchen.strategy, kitchen.model, paths)
    recipe = (greedy_soup if greedy else uniform_soup)(kitchen, paths)
    kitchen.load(recipe.tensors)
    final = {split: kitchen.evaluate(split) for split in SPLITS}
    return write_soup_folder(out, ingredients, kitchen, recipe, final, started)
