"""The training and comparison views: events drawn on the main thread, Stop within one step
in a real kernel (a click sent as the browser sends it, while a cell awaits the run), Resume
from the checkpoint, the Train button, and ``adaptlab compare`` on the same runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import run_cli

SETTINGS = {"image_size": 64, "batch_size": 4, "device": "cpu", "lr": 3e-3}


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steps(run_dir: Path) -> list[int]:
    return [e["global_step"] for e in _events(run_dir) if e["event"] == "step"]


def test_view_trains_without_a_kernel_and_the_comparison_lists_the_run(tmp_path, colour_folder,
                                                                        monkeypatch, capsys):
    """The script path (no event loop): events applied on this thread, curves drawn, the run
    registered with the session's comparison view and readable by ``adaptlab compare``."""
    from adaptlab.widgets import comparison_view, setup_panel, training_view

    monkeypatch.chdir(tmp_path)
    panel = setup_panel("wildlife", data=str(colour_folder), out="runs/w",
                        settings={**SETTINGS, "epochs": 2})
    assert panel.error == "", panel.error
    view = training_view(panel)
    assert view.start() is not None and view.stop_button.disabled is False
    result = view.wait_blocking()
    assert result is not None and view.progress.status == "finished"
    assert view.bar.value == 1.0 and view.train_button.disabled is False
    assert view.curves.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert [epoch for epoch, _ in view.progress.validation] == [1, 2]
    assert [epoch for epoch, m in view.progress.training if 0 <= m["accuracy"] <= 1] == [1, 2]
    assert [h["train"] for h in result.metrics["history"]] == \
        [m for _, m in view.progress.training]  # the curve shows what metrics.json keeps
    assert "trainable parameters" in view.cost_panel.value
    assert "memory: activations" in view.cost_panel.value  # measured on the first step

    compare = comparison_view()
    assert Path(view.run_dir) in compare.selected_runs()
    assert compare.summaries[-1].status == "finished"
    assert compare.summaries[-1].test["macro_f1"] == result.metrics["final"]["test"]["macro_f1"]
    code, out, _ = run_cli(["compare", "runs", "--plot", "tradeoff.png"], capsys)
    assert code == 0 and "w " in out and "head" in out and "test macro_f1" in out
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(["compare", "nowhere"], capsys)
    assert code == 2 and "nowhere is not a folder" in err


def test_a_bad_panel_value_starts_nothing(tmp_path, colour_folder, monkeypatch):
    from adaptlab.widgets import setup_panel, training_view

    monkeypatch.chdir(tmp_path)
    panel = setup_panel("wildlife", data=str(colour_folder), settings={"lr": "-1"})
    assert "lr=-1.0 is below the minimum" in panel.error
    view = training_view(panel)
    assert view.start() is None and view.job is None
    assert "lr=-1.0" in view.message_text and not (tmp_path / "runs").exists()
    with pytest.raises(Exception, match="setting 'learning_rate' is not a training setting"):
        setup_panel("wildlife", settings={"learning_rate": 1.0})
    panel = setup_panel("wildlife", data=str(tmp_path / "no-such-photos"))
    assert "no-such-photos': no such file or folder" in panel.error


STOP_SETUP = """
from pathlib import Path
from adaptlab.widgets import comparison_view, setup_panel, training_view
panel = setup_panel("wildlife", data={data!r}, strategy="full", out="runs/stop",
                    settings={settings!r})
view = training_view(panel)
print(view.train_button.model_id, view.stop_button.model_id, view.resume_button.model_id)
"""


DIAGNOSE = "view.progress.status, view.run_dir, view.message_text, list(view.progress.log)[-5:]"


@pytest.mark.slow
def test_stop_in_a_real_kernel_ends_within_one_step_and_resume_finishes(tmp_path, colour_folder):
    from adaptlab.compare import summarise_run
    from kernel_client import KernelSession

    kernel = KernelSession(str(tmp_path))
    run_dir = tmp_path / "runs" / "stop"
    try:
        ids = kernel.run(STOP_SETUP.format(data=str(colour_folder),
                                           settings={**SETTINGS, "epochs": 3})).split()
        assert len(ids) == 3, ids
        train_id, stop_id, resume_id = ids
        # A cell awaits the run; the click arrives as a comm message while it waits.
        cell = kernel.submit("result = await view.train()\nprint('RESULT', result)")
        deadline = time.monotonic() + 240
        while len(_steps(run_dir)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_steps(run_dir)) >= 3, "training never started"
        kernel.click(stop_id)
        printed = kernel.collect(cell, timeout=240)
        assert "RESULT None" in printed, printed  # stopped: no result, no error
        requested = int(kernel.value("view.stop_requested_at"))
        steps = _steps(run_dir)
        assert steps[-1] <= requested + 1, (requested, steps)  # within one step
        kinds = [e["event"] for e in _events(run_dir)]
        assert "run_interrupted" in kinds and kinds.index("run_interrupted") > kinds.index("step")
        assert kernel.value("view.progress.status") == "stopped"
        assert kernel.value("view.resume_button.disabled") == "False"
        assert list((run_dir / "checkpoints").glob("epoch-*"))  # a checkpoint to resume from
        assert not (run_dir / "metrics.json").exists()
        assert summarise_run(run_dir).status == "stopped"

        # Resume by its button: the kernel is idle, the run goes on from the checkpoint.
        kernel.click(resume_id)
        kernel.wait_for("view.progress.status == 'finished'", timeout=300, diagnose=DIAGNOSE)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["epochs_run"] == 3
        # The curves go on from the stopped run's history, not from an empty plot.
        assert kernel.value("[s for s, _ in view.progress.train_loss] == "
                            "list(range(1, len(view.progress.train_loss) + 1))") == "True"
        after = _steps(run_dir)
        per_epoch = int(kernel.value("view.progress.steps_per_epoch"))
        assert after[-1] == 3 * per_epoch  # every step once: none lost, none repeated
        assert sorted(set(after)) == list(range(1, after[-1] + 1))

        # The Train button starts a new run in its own folder; the comparison view lists both.
        kernel.run("panel.training_controls['epochs'].value = '1'\n"
                   "compare = comparison_view()")
        kernel.click(train_id)
        kernel.wait_for("view.progress.status == 'finished' and view.run_dir.name == 'stop-2'",
                        timeout=300, diagnose=DIAGNOSE)
        listed = kernel.value("[s.status for s in compare.summaries]")
        assert listed == "['finished', 'finished']", listed
        assert kernel.value("view.curves.value[:4] == b'\\x89PNG'") == "True"

        # Pick the first run and press Explain: the report of that run shows in the view.
        kernel.run("compare.picker.value = (compare.summaries[0].run_dir,)\n"
                   "compare.samples.value = 1\ncompare.checks.value = False")
        kernel.click(kernel.value("compare.explain_button.model_id"))
        kernel.wait_for("'adaptlab-report' in compare.report.value", timeout=300)
        assert (run_dir / "report" / "index.html").is_file()
        assert not (tmp_path / "runs" / "stop-2" / "report").exists()
    finally:
        kernel.close()


@pytest.mark.slow
def test_the_kernels_interrupt_stops_an_awaited_run_with_a_checkpoint(tmp_path, colour_folder):
    from kernel_client import KernelSession

    kernel = KernelSession(str(tmp_path))
    run_dir = tmp_path / "runs" / "stop"
    try:
        kernel.run(STOP_SETUP.format(data=str(colour_folder), settings={**SETTINGS, "epochs": 3}))
        cell = kernel.submit("result = await view.train()")
        deadline = time.monotonic() + 240
        while len(_steps(run_dir)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        kernel.manager.interrupt_kernel()
        printed = kernel.collect(cell, timeout=240)
        assert "AdaptlabError: interrupted: runs/stop stopped after step" in printed, printed
        assert _steps(run_dir)[-1] <= int(kernel.value("view.stop_requested_at")) + 1
        assert (run_dir / "checkpoints" / "latest").is_file()
        assert kernel.value("view.resume_button.disabled") == "False"
    finally:
        kernel.close()


@pytest.mark.gpu
def test_view_trains_on_the_gpu_and_shows_its_peak_memory(tmp_path, colour_folder, monkeypatch):
    from adaptlab.widgets import setup_panel, training_view

    monkeypatch.chdir(tmp_path)
    panel = setup_panel("wildlife", data=str(colour_folder), strategy="lora",
                        settings={**SETTINGS, "device": "cuda", "epochs": 2})
    view = training_view(panel)
    view.start()
    result = view.wait_blocking()
    assert result is not None and result.costs["device"].startswith("cuda")
    assert result.costs["memory_bytes"]["peak_cuda"] > 0
    assert "memory: peak_cuda" in view.cost_panel.value


def test_a_crashed_run_process_is_reported_and_the_kernel_lives_on(tmp_path, colour_folder,
                                                                    monkeypatch):
    """The run's process dying (killed, out of memory) shows as a failed run with its exit
    code; the caller's process is untouched and the view can train again."""
    import os
    import signal

    from adaptlab.widgets import setup_panel, training_view

    monkeypatch.chdir(tmp_path)
    panel = setup_panel("wildlife", data=str(colour_folder), strategy="full", out="runs/c",
                        settings={**SETTINGS, "epochs": 3})
    view = training_view(panel)
    job = view.start()
    deadline = time.monotonic() + 120
    while (job.global_step or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(view.worker._process.pid, signal.SIGKILL)
    view.wait_blocking()
    assert view.progress.status == "failed" and view.result is None
    assert "the run's process ended with exit code -9" in view.message_text
    # Killed before its first checkpoint: Resume starts the run over from its config.
    assert not list((tmp_path / "runs" / "c" / "checkpoints").glob("epoch-*"))
    assert view.train_button.disabled is False and view.resume_button.disabled is False
    assert view.start(resume=True) is not None and view.wait_blocking() is not None
    assert view.progress.status == "finished" and view.run_dir.name == "c"
    assert "starting over" in "\n".join(view.progress.log)
    # The next Train gets a new process and runs to the end.
    panel.training_controls["epochs"].value = "1"
    assert view.start() is not None and view.wait_blocking() is not None
    assert view.progress.status == "finished" and view.run_dir.name == "c-2"
