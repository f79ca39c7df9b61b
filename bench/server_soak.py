"""The server extension over a long mixed session: a real ``jupyter server`` on loopback,
run folders under its root, and requests of every kind in turn (notebooks made from
templates, runs listed, domains listed, reports fetched, a path that tries to leave the
root refused). Prints requests served, errors, the server's open files and RSS before and
after, and how long listing takes with that many runs.

    python bench/server_soak.py [--requests 500] [--runs 500] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

TOKEN = "soak-token"
MIB = 2**20
# Bounds the run is judged by (exit status 1 beyond them). Open files: the server keeps a
# few sockets and log handles whose number can differ by one or two between two moments.
# RSS: a listing of 500 runs builds about a megabyte of JSON; CPython keeps freed arenas,
# so the resident size settles a few MiB above where it started. A leak grows with every
# request instead, so the second half of the requests must add almost nothing.
FD_GROWTH = 3
RSS_GROWTH_MIB = 16
RSS_SECOND_HALF_MIB = 2
# What a request of each kind is answered with when all is well.
KINDS = ("template", "runs", "domains", "report", "refused")
EXPECTED = {"template": 201, "runs": 200, "domains": 200, "report": 200, "refused": 403}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_runs(root: Path, count: int) -> None:
    """``count`` finished run folders holding every file the listing reads (config, events,
    metrics, costs, origin, report), in nested groups as a project keeps them."""
    (root / "project").mkdir(parents=True, exist_ok=True)
    (root / "project" / "wildlife.ipynb").write_text("{}")
    for index in range(count):
        run = root / "project" / f"group-{index % 10}" / f"run-{index:04d}"
        (run / "report").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({
            "domain": "wildlife", "data": "animals", "backbone": "resnet18",
            "strategy": "lora", "strategy_options": {"rank": 8}, "epochs": 3}))
        (run / "events.jsonl").write_text(
            "".join(json.dumps({"event": "epoch", "epoch": e}) + "\n" for e in range(3)))
        (run / "metrics.json").write_text(json.dumps({
            "final": {"test": {"accuracy": 0.8, "loss": 0.5}, "train": {"accuracy": 0.9},
                      "val": {"accuracy": 0.8}},
            "baseline": {"test": {"accuracy": 0.3}}, "monitor": "accuracy",
            "higher_is_better": True, "epochs_run": 3}))
        (run / "costs.json").write_text(json.dumps({
            "trainable_params": 1000, "total_params": 11_000_000, "trainable_percent": 0.01,
            "seconds_per_epoch": 2.0, "samples_per_second": 100.0,
            "memory_bytes": {"parameters": 1, "gradients": 1, "optimizer": 1,
                             "activations": 1}}))
        (run / "origin.json").write_text(json.dumps(
            {"notebook": str(root / "project" / "wildlife.ipynb")}))
        (run / "report" / "index.html").write_text(f"<title>{run.name}</title>")


def start_server(root: Path, state: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **{name: str(state / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR")}}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip", "127.0.0.1",
         "--port", str(port), f"--IdentityProvider.token={TOKEN}", "--allow-root",
         f"--ServerApp.root_dir={root}", "--ServerApp.jpserver_extensions=adaptlab.server=True"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jupyter server did not start") from None
            time.sleep(0.05)


def request(url: str, kind: str) -> tuple[int, bytes]:
    """One request of ``kind``; its status and body, errors included."""
    headers = {"Authorization": f"token {TOKEN}"}
    body = None
    if kind == "template":
        target, body = f"{url}/adaptlab/notebooks", json.dumps(
            {"domain": "wildlife", "path": "soak/made.ipynb", "unique": True}).encode()
    elif kind == "refused":
        target, body = f"{url}/adaptlab/notebooks", json.dumps(
            {"domain": "wildlife", "path": "../escaped.ipynb"}).encode()
    elif kind == "report":
        query = urllib.parse.urlencode({"run": "project/group-0/run-0000"})
        target = f"{url}/adaptlab/report?{query}"
    else:
        target = f"{url}/adaptlab/{kind}"
    sent = urllib.request.Request(target, data=body, headers=headers,
                                  method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(sent, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def soak(url: str, count: int, process: psutil.Process) -> dict[str, float]:
    """``count`` requests, kinds in turn; errors are unexpected answers or failures."""
    errors, rss_half = 0, 0
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        try:
            code, _ = request(url, kind)
        except OSError:
            code = -1
        errors += code != EXPECTED[kind]
        if index == count // 2:
            rss_half = process.memory_info().rss
    return {"errors": errors, "rss_half": rss_half}


def listing_seconds(url: str, repeats: int) -> tuple[float, float, dict]:
    """The first listing (the server's first request of all) and the median of
    ``repeats`` more."""
    times, payload = [], {}
    for _ in range(repeats + 1):
        started = time.perf_counter()
        code, body = request(url, "runs")
        times.append(time.perf_counter() - started)
        assert code == 200, code
        payload = json.loads(body)
    return times[0], statistics.median(times[1:]), payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=25,
                        help="requests before 'before' is measured: the first ones load the "
                             "plugins' metadata and start the worker threads, which stay")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, state = Path(tmp) / "root", Path(tmp) / "state"
        root.mkdir()
        fake_runs(root, args.runs)
        server, url = start_server(root, state)
        try:
            proc = psutil.Process(server.pid)
            first, warm, payload = listing_seconds(url, args.repeats)
            soak(url, args.warmup, proc)
            fds_before, rss_before = proc.num_fds(), proc.memory_info().rss
            started = time.perf_counter()
            result = soak(url, args.requests, proc)
            seconds = time.perf_counter() - started
            fds_after, rss_after = proc.num_fds(), proc.memory_info().rss
            made = len(list((root / "soak").glob("*.ipynb")))
            escaped = (root.parent / "escaped.ipynb").exists()
        finally:
            server.terminate()
            server.wait(timeout=30)
    per_kind = args.requests // len(KINDS)
    listed = len(payload["runs"])
    print(f"## Reliability: server extension soak\n\n{platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; one `jupyter server` "
          f"on loopback, {args.runs} run folders under its root, {args.warmup} warm-up "
          f"requests, then {args.requests} requests in turn (about {per_kind} each: notebook "
          "from a template, list runs, list domains, fetch a report, a '..' path refused "
          f"with 403), one at a time, {seconds:.1f} s in all.\n")
    print("| measure | value |\n|---|---|")
    print(f"| requests served | {args.requests} |")
    print(f"| errors (unexpected status or failure) | {result['errors']} |")
    print(f"| notebooks made (warm-up included) / written outside the root | {made} / "
          f"{'yes' if escaped else 'none'} |")
    print(f"| server open files before / after | {fds_before} / {fds_after} |")
    print(f"| server RSS before / halfway / after (MiB) | {rss_before / MIB:.1f} / "
          f"{result['rss_half'] / MIB:.1f} / {rss_after / MIB:.1f} |")
    print(f"| runs listing with {args.runs} runs: first / median of {args.repeats} (s) | "
          f"{first:.3f} / {warm:.3f} |")
    print(f"| runs listed / truncated | {listed} / {payload['truncated']} |")
    grown, second_half = (rss_after - rss_before) / MIB, (rss_after - result["rss_half"]) / MIB
    within = (result["errors"] == 0 and not escaped and fds_after - fds_before <= FD_GROWTH
              and grown <= RSS_GROWTH_MIB and second_half <= RSS_SECOND_HALF_MIB
              and listed == min(args.runs, 500))
    print(f"\nBounds: errors 0, open files +{FD_GROWTH} at most, RSS +{RSS_GROWTH_MIB} MiB at "
          f"most and +{RSS_SECOND_HALF_MIB} MiB at most over the second half (a leak grows "
          f"with the requests, a warm-up does not): {'met' if within else 'NOT MET'}.")
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
