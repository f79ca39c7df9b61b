"""One run, end to end: validate everything, then train, evaluate and write the run folder.

Every input is checked before the run folder is touched, so a bad value never damages an
earlier run. The CLI, the widgets and Python callers all come through :func:`run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adaptlab.assembly import RunResult, assemble, load_source_data, strategy_rates
from adaptlab.config import RunConfig
from adaptlab.engine import distributed
from adaptlab.engine.trackers import check_installed
from adaptlab.errors import AdaptlabError
from adaptlab.plugins.registry import get_domain
from adaptlab.session import TrainingSession

__all__ = ["RunResult", "config_for", "run"]


def config_for(domain_name: str, **fields: Any) -> RunConfig:
    """A RunConfig with the domain's own training defaults, then ``fields`` on top.

    >>> config_for("wildlife", strategy="freeze", out="runs/x").epochs  # doctest: +SKIP
    10
    """
    domain = get_domain(domain_name)
    identity = {k: v for k, v in fields.items()
                if k in ("dataset", "data", "backbone", "strategy", "strategy_options", "out")}
    training = {k: v for k, v in fields.items() if k not in identity}
    dataset_defaults = {} if identity.get("data") else \
        domain.dataset(identity.get("dataset") or domain.default_dataset).defaults
    defaults = {k: v for k, v in {**domain.defaults, **dataset_defaults}.items()
                if k in RunConfig.__dataclass_fields__}
    strategy = identity.get("strategy") or domain.default_strategy
    dataset = None if identity.get("data") else identity.get("dataset") or domain.default_dataset
    if strategy != domain.default_strategy or \
            strategy in strategy_rates(domain, dataset, identity.get("backbone")):
        # The domain's rate is its recipe for its own default strategy; another strategy, or
        # one the domain chose a rate for, gets assembly.default_lr's, filled in when completed.
        defaults.pop("lr", None)
    config = RunConfig(domain=domain_name, **identity)
    return config.validated({**defaults, **training})


def _leftover(path: Path) -> bool:
    """A temporary file an atomic write left when its process was killed: nothing of a run."""
    return path.name.startswith(".") and ".tmp" in path.name


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if resume:
        if not (run_dir / "config.json").is_file():
            raise AdaptlabError(f"--resume: {run_dir} holds no run (config.json missing)")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise AdaptlabError(f"--out {run_dir} exists and is not a folder")
    if run_dir.is_dir() and any(not _leftover(p) for p in run_dir.iterdir()):
        raise AdaptlabError(f"--out {run_dir} already holds a run; choose another folder or "
                            "pass --resume to continue it")


def _device_to_join(device: str, run_dir: Path, resume: bool) -> str:
    """The device the processes join their group for: a resumed run's own, so that resuming a
    CPU run on a machine with GPUs forms a gloo group, not NCCL. A folder whose config does not
    read back is refused by the run-folder check right after joining."""
    saved = run_dir / "config.json"
    if resume and saved.is_file():
        try:
            return RunConfig.from_file(saved).device
        except AdaptlabError:
            pass
    return device


def run(config: RunConfig, resume: bool = False,
        subscribers: Iterable[Callable[[dict], None]] = (), progress: bool = True,
        on_trainer: Callable[[Any], None] | None = None) -> RunResult:
    """Train and evaluate as ``config`` says; returns what the run folder holds.

    ``on_trainer`` receives the trainer before fitting (the widgets keep it to request a stop).
    """
    run_dir = Path(config.out)
    distributed.join(_device_to_join(config.device, run_dir, resume))
    # A new run's folder is judged by the main process, which writes it (a machine that does
    # not share it is refused below, by name, rather than for an earlier run of its own at
    # that path); a resumed one is read by every process, so each checks it. Either way all
    # stop together, before the main process writes.
    distributed.check_together(lambda: _check_run_dir(run_dir, resume), everyone=resume)
    if resume:
        config = RunConfig.from_file(run_dir / "config.json")
    distributed.check_batch(config.batch_size, distributed.world_size())
    check_installed(config.trackers)
    with distributed.main_first():
        parts = assemble(config)
        session = TrainingSession(parts.config, parts.domain, parts.data, parts.backbone,
                                  parts.strategy, source_data=load_source_data(
                                      parts.config, parts.domain, parts.data))
    # Checked by the main process, outside main_first: a refusal then stops every process
    # with its message, where one raised inside would leave the others at its barrier.
    distributed.check_together(session.check, everyone=False)
    distributed.check_shared_folder(run_dir)
    return session.execute(run_dir, resume=resume, subscribers=subscribers, progress=progress,
                           on_trainer=on_trainer)
