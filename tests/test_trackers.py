"""Experiment trackers through Accelerate: a run with ``trackers=tensorboard,mlflow`` writes
both inside its folder, and what TensorBoard's and MLflow's own readers find there is what the
run's ``metrics.json`` and ``events.jsonl`` say. Names that are unknown or not installed are
refused before the run folder is written."""

from __future__ import annotations

import json
import os

import pytest

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from conftest import write_colour_folder


@pytest.mark.slow
def test_run_logs_metrics_steps_and_config_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    data = write_colour_folder(tmp_path / "data", per_class=10)
    config = RunConfig(domain="wildlife", data=str(data), strategy="head", out=str(tmp_path / "run"),
                       device="cpu", epochs=2, image_size=32, batch_size=8, lr=3e-3,
                       ).validated({"trackers": "tensorboard,mlflow"})
    run_dir = run(config, progress=False).run_dir
    # The run pointed MLflow at its own folder only while it ran.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ

    metrics = json.loads((run_dir / "metrics.json").read_text())
    monitor = metrics["monitor"]
    expected = {name: {h["epoch"]: h["val"][name] for h in metrics["history"]}
                for name in (monitor, "loss")}
    assert sorted(expected[monitor]) == [1, 2]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    step_losses = {e["global_step"]: e["loss"] for e in events if e["event"] == "step"}

    # TensorBoard, read back by its own event reader.
    (logdir,) = [p for p in (run_dir / "trackers" / "tensorboard").iterdir() if p.is_dir()]
    board = EventAccumulator(str(logdir))
    board.Reload()
    epoch_at = {e.step: int(e.value) for e in board.Scalars("epoch")}
    for name, per_epoch in expected.items():
        logged = {epoch_at[e.step]: e.value for e in board.Scalars(f"val/{name}")}
        assert logged == pytest.approx(per_epoch, rel=1e-6)  # TensorBoard keeps float32
    steps = [e.step for e in board.Scalars("step/loss")]
    assert steps == sorted(set(steps)) and len(steps) == len(step_losses) > 2
    assert {e.step: e.value for e in board.Scalars("step/loss")} == pytest.approx(step_losses,
                                                                                   rel=1e-6)
    hparams = {}
    for folder in logdir.iterdir():  # the hyperparameters go to a folder of their own
        if any(folder.glob("events.out.tfevents.*")):
            reader = EventAccumulator(str(folder))
            reader.Reload()
            for content in reader.PluginTagToContent("hparams").values():
                start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
                hparams.update(start.hparams)
    assert hparams["strategy"].string_value == "head"
    assert hparams["lr"].number_value == pytest.approx(3e-3)

    # MLflow, read back by its client from the run folder's file store.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens file stores on request
    client = MlflowClient(tracking_uri=(run_dir / "trackers" / "mlflow").as_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    (logged_run,) = client.search_runs(experiments)
    assert logged_run.info.status == "FINISHED"
    assert logged_run.info.run_name == "run"  # the run folder's name
    params = logged_run.data.params
    assert params["strategy"] == "head" and float(params["lr"]) == 3e-3
    assert params["domain"] == "wildlife" and params["trackers"] == "tensorboard,mlflow"
    run_id = logged_run.info.run_id
    epoch_at = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    for name, per_epoch in expected.items():
        history = client.get_metric_history(run_id, f"val/{name}")
        assert {epoch_at[m.step]: m.value for m in history} == pytest.approx(per_epoch, rel=1e-12)
    history = client.get_metric_history(run_id, "step/loss")
    assert [m.step for m in history] == sorted(step_losses)
    assert {m.step: m.value for m in history} == pytest.approx(step_losses, rel=1e-12)
    test_final = metrics["final"]["test"]
    assert logged_run.data.metrics[f"test/{monitor}"] == pytest.approx(test_final[monitor])
    assert logged_run.data.metrics["cost/trainable_params"] > 0


def test_unknown_or_missing_trackers_are_refused_before_the_run_folder(tmp_path, monkeypatch):
    import accelerate.tracking

    base = RunConfig(domain="wildlife")
    assert base.trackers == []
    for text, names in (("", []), ("none", []), ("TensorBoard, mlflow,tensorboard",
                                                 ["tensorboard", "mlflow"])):
        assert base.with_overrides([f"trackers={text}"], set()).trackers == names

    with pytest.raises(AdaptlabError) as unknown:
        base.with_overrides(["trackers=tensorboard,neptune"], set())
    message = str(unknown.value)
    assert "trackers='neptune'" in message and "tensorboard" in message and "\n" not in message

    # wandb is not among the project's dependencies; where it is installed, Accelerate is
    # shown an environment without it.
    monkeypatch.setattr(accelerate.tracking, "_available_trackers",
                        [t for t in accelerate.tracking.get_available_trackers()
                         if str(t) != "wandb"])
    data = write_colour_folder(tmp_path / "data", per_class=4)
    for names, wanted in ((["tensorboard", "wandb"], "'wandb' is not installed; install it with "
                                                     "`pip install wandb`"),
                          (["neptune"], "trackers='neptune'")):
        out = tmp_path / f"run-{names[-1]}"
        config = RunConfig(domain="wildlife", data=str(data), out=str(out), device="cpu",
                           epochs=1, image_size=32, trackers=names)
        with pytest.raises(AdaptlabError) as refused:
            run(config, progress=False)
        assert wanted in str(refused.value) and "\n" not in str(refused.value)
        assert not out.exists()
