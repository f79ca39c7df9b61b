"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Accelerate's own
integration: ``RunConfig.trackers`` names them, and the engine's events become
``accelerator.log`` calls.

TensorBoard and MLflow write inside the run folder (``trackers/tensorboard/``, and an MLflow
file store in ``trackers/mlflow/``), so a run folder stays whole when it is moved or shared;
Weights & Biases logs where its own configuration says, keeping its local files in
``trackers/wandb/``. With several processes, Accelerate creates and feeds the trackers on the
main process only.

Logged keys, all against the optimizer's global step (one x axis for every chart):
``step/loss`` and ``step/lr`` each step; ``train/*`` (the epoch's training metrics), ``val/*``
and ``epoch`` at each epoch's end; ``cost/*`` with each cost update; ``test/*`` once, at the
end. The run's config is logged once, flattened to scalars, as the run's parameters.
"""

from __future__ import annotations

import dataclasses
import os
from numbers import Real
from pathlib import Path
from typing import Any

from adaptlab.errors import AdaptlabError

# The trackers Accelerate knows that a run may name, and the package that provides each.
SUPPORTED = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}


def parse_trackers(value: Any) -> list[str]:
    """The tracker names in ``value`` (a list, or text with commas), each once, in order.

    >>> parse_trackers("TensorBoard, mlflow,tensorboard")
    ['tensorboard', 'mlflow']
    """
    if value is None:
        return []
    names: list[str] = []
    for item in value.split(",") if isinstance(value, str) else value:
        name = str(item).strip().lower()
        if not name or name in names:
            continue
        if name not in SUPPORTED:
            raise AdaptlabError(f"run config: trackers={name!r} is not one of {list(SUPPORTED)}")
        names.append(name)
    return names


def check_installed(value: Any) -> list[str]:
    """``parse_trackers``, refusing a tracker whose package is missing: Accelerate would
    drop it without a word and the run would log nothing there."""
    names = parse_trackers(value)
    if names:
        from accelerate.tracking import get_available_trackers

        available = {str(tracker) for tracker in get_available_trackers()}
        for name in names:
            if name not in available:
                raise AdaptlabError(f"trackers: {name!r} is not installed; install it with "
                                    f"`pip install {SUPPORTED[name]}`")
    return names


def flat_config(config: Any) -> dict[str, Any]:
    """``config`` (a dataclass) as one level of scalars: trackers take only scalars, nested
    options become ``outer.inner``, lists are comma-joined and unset values left out."""
    flat: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                put(f"{key}.{name}" if key else str(name), inner)
        elif isinstance(value, list | tuple):
            flat[key] = ",".join(str(item) for item in value)
        elif isinstance(value, bool | int | float | str):
            flat[key] = value
        elif value is not None:
            flat[key] = str(value)

    put("", dataclasses.asdict(config))
    return flat


def numbers(values: dict[str, Any], prefix: str, nested: bool = False) -> dict[str, float | int]:
    """The numeric entries of ``values`` under ``prefix`` (a tracker's log takes numbers;
    texts and lists such as a confusion matrix stay in metrics.json)."""
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if isinstance(value, dict) and nested:
            out.update(numbers(value, f"{prefix}{key}.", nested))
        elif isinstance(value, Real) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value if isinstance(value, int) else float(value)
    return out


class RunTrackers:
    """The trackers of one run: the options its Accelerator is made with, then a subscriber
    of the run's event bus, then ``end``. With no trackers named, every method does nothing."""

    def __init__(self, config: Any, run_dir: Path) -> None:
        self.names = parse_trackers(config.trackers)
        self.config = config
        self.folder = Path(run_dir).resolve() / "trackers"
        self.accelerator = None
        self._step = 0
        self._mlflow_env: dict[str, str | None] = {}  # the process's values before this run

    def accelerator_options(self) -> dict[str, Any]:
        if not self.names:
            return {}
        from accelerate.utils import ProjectConfiguration

        return {"log_with": list(self.names),
                "project_config": ProjectConfiguration(
                    project_dir=str(self.folder), logging_dir=str(self.folder / "tensorboard"))}

    def start(self, accelerator, bus) -> None:
        if not self.names:
            return
        self.accelerator = accelerator
        if not accelerator.is_main_process:
            return
        project, run_name = f"adaptlab-{self.config.domain}", self.folder.parent.name
        init: dict[str, dict] = {}
        if "mlflow" in self.names:
            init["mlflow"] = self._use_mlflow_store(project, run_name)
        if "wandb" in self.names:
            (self.folder / "wandb").mkdir(parents=True, exist_ok=True)
            init["wandb"] = {"name": run_name, "dir": str(self.folder / "wandb")}
        accelerator.init_trackers(project, config=flat_config(self.config), init_kwargs=init)
        bus.subscribe(self)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "epoch_start":
            # A resumed run logs its first costs before its first step: at the step it
            # resumes from, not back at step 0 of the charts.
            self._step = (event["epoch"] - 1) * event["steps"] + event["start"]
        elif kind == "step":
            self._step = event["global_step"]
            self._log({"step/loss": event["loss"], "step/lr": event["lr"]})
        elif kind == "train_metrics":
            self._log(numbers(event["metrics"], "train/"))
        elif kind == "eval":
            self._log({**numbers(event["metrics"], f"{event['split']}/"), "epoch": event["epoch"]})
        elif kind == "cost":
            self._log(numbers({k: v for k, v in event.items() if k not in ("event", "time")},
                              "cost/", nested=True))
        elif kind == "run_end":
            self._log(numbers(event["test"], "test/"))

    def _log(self, values: dict[str, Any]) -> None:
        if values:
            self.accelerator.log(values, step=self._step)

    def end(self) -> None:
        """Close the trackers; the run calls it however it ended (finished, stopped, failed)."""
        accelerator, self.accelerator = self.accelerator, None
        if accelerator is None:  # no trackers: end_training would also end the process group
            return
        try:
            accelerator.end_training()
        finally:
            if self._mlflow_env:
                self._restore_mlflow()

    def _use_mlflow_store(self, project: str, run_name: str) -> dict[str, Any]:
        """Point MLflow at the run folder's file store for the run's duration (its logging
        calls read the process's tracking URI each time); a resumed run goes on in the
        MLflow run it started."""
        import mlflow

        store = self.folder / "mlflow"
        # MLflow keeps a URI set in the process in MLFLOW_TRACKING_URI as well.
        self._mlflow_env = {name: os.environ.get(name) for name in _MLFLOW_ENV}
        # MLflow 3 refuses a file store unless asked: a database store needs SQLAlchemy and
        # its migrations, a file store nothing, and readers open it with the same switch.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        previous = _last_mlflow_run(store, project) if store.is_dir() else None
        mlflow.set_tracking_uri(store.as_uri())
        return {"run_name": run_name, **({"run_id": previous} if previous else {})}

    def _restore_mlflow(self) -> None:
        import mlflow

        saved, self._mlflow_env = self._mlflow_env, {}
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        if saved["MLFLOW_ALLOW_FILE_STORE"] is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = saved["MLFLOW_ALLOW_FILE_STORE"]


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")


def _last_mlflow_run(store: Path, experiment_name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None
