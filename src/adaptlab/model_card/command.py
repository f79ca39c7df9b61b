"""The ``adaptlab run`` command line that rebuilds a run's ``config.json``.

The CLI fills a config from the domain's and the dataset's defaults (``run.config_for``), so
the command names the run's choices (domain, data, backbone, strategy, folder), the flags the
CLI has (``--epochs``, ``--seed``, ``--device``), ``--set KEY=VALUE`` for every other value
that differs from those defaults, and ``--set strategy.KEY=VALUE`` for every strategy option the
config lists (a run lists them all, so the command replays it whatever the defaults are then).
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from adaptlab.config import _IDENTITY_FIELDS, RunConfig

FLAG_FIELDS = ("epochs", "seed", "device")  # the fields ``adaptlab run`` has a flag for


def _text(value: Any) -> str:
    """A value as ``--set`` reads it back (``schema.coerce``): lists comma-joined, None as
    ``none``, floats exact."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return repr(value) if isinstance(value, float) else str(value)


def run_arguments(config: RunConfig) -> list[str]:
    """The arguments after ``adaptlab`` (``run DOMAIN ...``) that rebuild ``config``."""
    from adaptlab.run import config_for

    argv = ["run", config.domain]
    argv += ["--data", config.data] if config.data else ["--dataset", config.dataset or ""]
    if config.backbone:
        argv += ["--backbone", config.backbone]
    if config.strategy:
        argv += ["--strategy", config.strategy]
    for name in FLAG_FIELDS:
        argv += [f"--{name}", str(getattr(config, name))]
    defaults = config_for(config.domain, dataset=config.dataset, data=config.data)
    for f in dataclasses.fields(RunConfig):
        if f.name in _IDENTITY_FIELDS or f.name in FLAG_FIELDS:
            continue
        value = getattr(config, f.name)
        if value != getattr(defaults, f.name):
            argv += ["--set", f"{f.name}={_text(value)}"]
    for key, value in sorted(config.strategy_options.items()):
        argv += ["--set", f"strategy.{key}={_text(value)}"]
    return [*argv, "--out", config.out]


def command_line(config: RunConfig) -> str:
    """``adaptlab run ...`` quoted for a POSIX shell."""
    return shlex.join(["adaptlab", *run_arguments(config)])
