"""adaptlab: adapt pre-trained models to new domains.

Importing this package is light (no torch); heavy parts load when a run starts.
"""

__version__ = "0.1.0"


def load_run(run_dir, device=None, with_data=True):
    """The adapted model of a finished run folder, with its data and configuration
    (:class:`adaptlab.run_loading.LoadedRun`); imports torch on first call.
    ``with_data=False`` reads the data's saved description instead of the data (enough to
    predict where the training data is not at hand).

    >>> run = adaptlab.load_run("runs/head")  # doctest: +SKIP
    >>> logits = run.model(batch)  # doctest: +SKIP
    """
    from adaptlab.run_loading import load_run as _load_run

    return _load_run(run_dir, device=device, with_data=with_data)
