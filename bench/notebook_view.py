"""What the notebook's training view costs, and how fast Stop acts, measured side by side.

- Overhead: the same run (wildlife demo) through ``adaptlab.run.run`` directly and through
  the training view (worker thread, event queue, main-thread drains, curve redraws),
  alternating the order over the repeats; reported as a wall-time ratio, with the main
  thread's time spent drawing.
- Stop latency: a run stopped at a given step; how many steps ran after the request, and the
  seconds until the worker had written its checkpoint and ended.

    python bench/notebook_view.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402


def _config(out: Path, device: str, strategy: str = "head", epochs: int = 3):
    from adaptlab.run import config_for

    return config_for("wildlife", strategy=strategy, out=str(out), device=device, epochs=epochs,
                      image_size=128, batch_size=8)


class _Panel:
    """Stands where a SetupPanel stands: the view asks it for a config."""

    def __init__(self, config) -> None:
        self._config = config

    def config(self):
        return self._config


def _timed_view(config):
    from adaptlab.widgets.train_view import TrainingView

    view = TrainingView(_Panel(config))
    drawing = [0.0]
    apply = view._apply

    def timed_apply(events):
        start = time.perf_counter()
        apply(events)
        drawing[0] += time.perf_counter() - start

    view._apply = timed_apply
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


def _stop_latency(config, stop_at: int) -> tuple[int, float]:
    from adaptlab.widgets.jobs import LiveRun

    job = LiveRun(config).start()
    while (job.global_step or 0) < stop_at and job.running:
        time.sleep(0.005)
    requested_at = job.global_step
    asked = time.perf_counter()
    job.request_stop()
    job.join()
    seconds = time.perf_counter() - asked
    steps = [e["global_step"] for e in job.drain() if e["event"] == "step"]
    assert job.result is not None and not job.result.metrics, job.error  # stopped, not done
    return steps[-1] - requested_at, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-view-"))
    direct, viewed, drawing = [], [], []
    for i in range(args.repeats):
        order = ("direct", "view") if i % 2 == 0 else ("view", "direct")
        for kind in order:
            config = _config(root / f"{kind}-{i}", args.device)
            if kind == "direct":
                direct.append(_direct(config))
            else:
                seconds, drawn = _timed_view(config)
                viewed.append(seconds)
                drawing.append(drawn)
    latencies = [_stop_latency(_config(root / f"stop-{i}", args.device, strategy="full",
                                       epochs=2), stop_at=3 + i)
                 for i in range(args.repeats)]
    ratio = statistics.median(v / d for v, d in zip(viewed, direct, strict=True))
    body = "\n".join([
        f"## Notebook training view ({args.device})", "",
        f"{machine()}. Wildlife demo (85 photos), EfficientNet-Lite0, `head`, 3 epochs, "
        f"128 px, batch 8; {args.repeats} repeats, order alternating.", "",
        "| path | wall seconds (median) | main thread drawing (median s) |",
        "|---|---|---|",
        f"| `run()` directly | {statistics.median(direct):.1f} | - |",
        f"| training view (worker + drains + curves) | {statistics.median(viewed):.1f} | "
        f"{statistics.median(drawing):.2f} |", "",
        f"View / direct wall-time ratio: **{ratio:.3f}** (median of per-repeat ratios).", "",
        "Stop latency (`full`, 2 epochs, stop requested at steps "
        f"{', '.join(str(3 + i) for i in range(args.repeats))}): steps run after the request "
        f"{[s for s, _ in latencies]}, seconds until the checkpoint was written and the "
        f"worker ended {[round(t, 2) for _, t in latencies]}.",
    ])
    write_section("notebook-view", body)
    print(body)


if __name__ == "__main__":
    main()
