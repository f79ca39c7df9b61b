"""adaptlab: adapt pre-trained models to new domains.

Importing this package is light (no torch); heavy parts load when a run starts.
"""

__version__ = "0.1.0"


def load_run(run_dir, device=None):
    """The adapted model of a finished run folder, with its data and configuration
    (:class:`adaptlab.run_loading.LoadedRun`); imports torch on first call.

    >>> run = adaptlab.load_run("runs/head")  # doctest: +SKIP
    >>> logits = run.model(batch)  # doctest: +SKIP
    """
    from adaptlab.run_loading import load_run as _load_run

    return _load_run(run_dir, device=device)
