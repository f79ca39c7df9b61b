"""What the notebook's training view costs, and how fast Stop acts, measured side by side.

- Overhead: the same run (wildlife demo; a short head-only run and a longer full fine-tune)
  through ``adaptlab.run.run`` directly, on a second thread, and through the training view
  (child process, event stream, main-thread drains, curve redraws), alternating the order
  over the repeats; reported as wall-time ratios, with the main thread's time spent drawing.
- Stop latency: a run stopped at a given step; how many steps ran after the stop reached
  it, and the seconds until the child had written its checkpoint and ended.

    python bench/notebook_view.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402


def _config(out: Path, device: str, strategy: str = "head", epochs: int = 3, size: int = 128):
    from adaptlab.run import config_for

    return config_for("wildlife", strategy=strategy, out=str(out), device=device, epochs=epochs,
                      image_size=size, batch_size=8)


class _Panel:
    """Stands where a SetupPanel stands: the view asks it for the next run's config."""

    def __init__(self) -> None:
        self.next_config = None

    def config(self):
        return self.next_config


def _timed_view(view, panel: _Panel, config) -> tuple[float, float]:
    """One run through ``view`` (kept between runs, as a notebook keeps it)."""
    drawing = [0.0]
    apply = type(view)._apply

    def timed_apply(events):
        start = time.perf_counter()
        apply(view, events)
        drawing[0] += time.perf_counter() - start

    view._apply = timed_apply
    panel.next_config = config
    start = time.perf_counter()
    view.start()
    view.wait_blocking()
    assert view.result is not None, view.message_text
    return time.perf_counter() - start, drawing[0]


def _direct(config) -> float:
    from adaptlab.run import run

    start = time.perf_counter()
    run(config, progress=False)
    return time.perf_counter() - start


def _on_a_thread(config) -> float:
    """The first design: ``run()`` on a thread of this process (whose main thread has
    already run PyTorch, as a notebook kernel's has)."""
    import threading

    from adaptlab.run import run

    start = time.perf_counter()
    worker = threading.Thread(target=run, args=(config,), kwargs={"progress": False})
    worker.start()
    worker.join()
    return time.perf_counter() - start


def _spawn_seconds() -> float:
    from adaptlab.run_process import RunWorker

    start = time.perf_counter()
    worker = RunWorker().spawn()
    assert worker.wait_ready(timeout=300)
    seconds = time.perf_counter() - start
    worker.close()
    return seconds


def _stop_latency(worker, config, stop_at: int) -> tuple[int, float]:
    job = worker.submit(config)
    while (job.global_step or 0) < stop_at and job.running:
        time.sleep(0.005)
    asked = time.perf_counter()
    job.request_stop()
    job.join()
    seconds = time.perf_counter() - asked
    events = job.drain()
    received = next(e["global_step"] for e in events if e["event"] == "stop_received")
    steps = [e["global_step"] for e in events if e["event"] == "step"]
    assert job.result is not None and not job.result.metrics, job.error  # stopped, not done
    return steps[-1] - received, seconds


# (strategy, epochs, image size): a short head-only run, a longer full fine-tune, and the
# full fine-tune at the demo's own 224 px.
WORKLOADS = (("head", 3, 128), ("full", 3, 128), ("full", 3, 224))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-view-"))
    rows = []
    from adaptlab.widgets.train_view import TrainingView

    panel = _Panel()
    view = TrainingView(panel)
    for strategy, epochs, size in WORKLOADS:
        # One untimed run of each path first: every timed run is a warm one (a notebook's
        # second run; the first pays one-off costs on every path).
        warm = _config(root / f"{strategy}-{size}-warm", args.device, strategy, 1, size)
        _direct(warm)
        _on_a_thread(dataclasses.replace(warm, out=warm.out + "-thread"))
        _timed_view(view, panel, dataclasses.replace(warm, out=warm.out + "-view"))
        seconds: dict[str, list[float]] = {"direct": [], "thread": [], "view": []}
        drawing = []
        for i in range(args.repeats):
            kinds = list(seconds) if i % 2 == 0 else list(reversed(seconds))
            for kind in kinds:
                config = _config(root / f"{strategy}-{size}-{kind}-{i}", args.device, strategy,
                                 epochs, size)
                if kind == "direct":
                    seconds[kind].append(_direct(config))
                elif kind == "thread":
                    seconds[kind].append(_on_a_thread(config))
                else:
                    wall, drawn = _timed_view(view, panel, config)
                    seconds[kind].append(wall)
                    drawing.append(drawn)
        ratios = {kind: statistics.median(v / d for v, d in zip(values, seconds["direct"],
                                                                strict=True))
                  for kind, values in seconds.items()}
        rows.append(f"| `{strategy}`, {epochs} epochs, {size} px | "
                    f"{statistics.median(seconds['direct']):.1f}"
                    f" | {statistics.median(seconds['thread']):.1f} ({ratios['thread']:.3f}x) | "
                    f"{statistics.median(seconds['view']):.1f} ({ratios['view']:.3f}x) | "
                    f"{statistics.median(drawing):.2f} |")
    ready = [_spawn_seconds() for _ in range(args.repeats)]
    latencies = [_stop_latency(view.worker, _config(root / f"stop-{i}", args.device, "full", 2),
                               stop_at=3 + i) for i in range(args.repeats)]
    view.close()
    body = "\n".join([
        f"## Notebook training view ({args.device})", "",
        f"{machine()}. Wildlife demo (85 photos), EfficientNet-Lite0, batch 8; the "
        "same run through `run()` in this process, through `run()` on a second thread of it "
        "(the first design of the view), and through the training view (its child process, "
        "kept between runs, streaming events; main-thread drains and curve redraws); after "
        f"one untimed run of each path, medians of {args.repeats} repeats, order "
        "alternating.", "",
        "| run | `run()` s | `run()` on a thread s (/ direct) | view: child process s "
        "(/ direct) | view's main-thread drawing s |",
        "|---|---|---|---|---|",
        *rows, "",
        "A second thread of a process whose main thread has run PyTorch trains slower on the "
        "CPU (its OpenMP team competes with the first), which is why the view runs training "
        "in a child process, kept between runs (a fresh process pays the first-run costs "
        "again). The view's own cost is a few curve draws (one per evaluation, at most one "
        "every 2 s between) and the event stream. A fresh child imported the engine in "
        f"{statistics.median(ready):.1f} s; the view spawns its process when it is created, "
        "so Train does not wait for that.", "",
        "Stop latency (`full`, 2 epochs, stop requested at steps "
        f"{', '.join(str(3 + i) for i in range(args.repeats))}): steps run after the stop reached the run "
        f"{[s for s, _ in latencies]}, seconds from the request until the checkpoint was written and the "
        f"run ended {[round(t, 2) for _, t in latencies]}.",
    ])
    write_section("notebook-view", body)
    print(body)


if __name__ == "__main__":
    main()
