"""Analyses of a finished run: what fine-tuning changed, block by block.

>>> from adaptlab.analysis import analyse  # doctest: +SKIP
>>> analyse("runs/code-full").suggested_k  # doctest: +SKIP
4
"""

from __future__ import annotations

from pathlib import Path


def analyse(run_dir: str | Path, probe: int | None = None, threshold: float | None = None,
            split: str | None = None, device: str | None = None, write: bool = True):
    """Telly's layer-change analysis of the run in ``run_dir`` (see
    :mod:`adaptlab.analysis.layer_change`), written to ``RUN_DIR/analysis/`` unless
    ``write=False``. Returns :class:`adaptlab.analysis.layer_change.LayerChange`."""
    from adaptlab.analysis.layer_change import DEFAULT_PROBE, DEFAULT_THRESHOLD, analyse_run, write_analysis
    from adaptlab.run_loading import load_run

    loaded = load_run(run_dir, device=device)
    result = analyse_run(loaded, probe or DEFAULT_PROBE,
                         DEFAULT_THRESHOLD if threshold is None else threshold, split)
    if write:
        write_analysis(result, run_dir)
    return result
