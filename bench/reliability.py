"""Reliability figures for BENCHMARKS.md: kills survived (runs, sweeps, soups, explanations),
bad inputs handled out of those tried, and the server's long mixed session.

    python bench/reliability.py [--kills 20] [--command-kills 3] [--skip-server]

Each figure comes from the same scripts the tests use (``tests/fault_injection.py``,
``tests/command_faults.py``, ``tests/test_bad_input_corpus.py``, ``bench/server_soak.py``),
run here with more kills; the section is rewritten in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))
ENV = {**os.environ, "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _json_tail(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV)
    if done.returncode:
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_kills(tmp: Path, kills: int) -> list[dict]:
    from conftest import write_colour_folder

    data = write_colour_folder(tmp / "colours")
    rows = []
    for strategy, options in (("freeze", {"k": -3}), ("lora", {}),
                              ("slimfit", {"freeze_ratio": 0.9})):
        report = _json_tail([str(TESTS / "fault_injection.py"), "--data", str(data),
                             "--strategy", strategy, "--options", json.dumps(options),
                             "--kills", str(kills), "--out", str(tmp / f"fi-{strategy}")])
        rows.append({"what": f"training run, `{strategy}` (4 epochs)", **report})
    return rows


def command_kills(tmp: Path, kills: int) -> list[dict]:
    from conftest import write_colour_folder

    for index, (split, per_class) in enumerate((("train", 6), ("val", 3), ("test", 3))):
        write_colour_folder(tmp / "split" / split, per_class=per_class, seed=index)
    base = [str(TESTS / "command_faults.py"), "--kills", str(kills)]
    runs = tmp / "sweep" / "reference"
    commands = [
        ("sweep, freeze K=2 at 2 seeds", None, [
            "sweep", "wildlife", "--data", str(tmp / "split"), "--strategy", "freeze", "--k",
            "2", "--seeds", "0,1", "--epochs", "2", "--device", "cpu", "--set",
            "image_size=32", "--set", "batch_size=8", "--quiet", "--out", "{OUT}"], "sweep"),
        ("uniform soup of the sweep's 2 runs", None, [
            "soup", str(runs / "k=2-seed=0"), str(runs / "k=2-seed=1"), "--device", "cpu",
            "--out", "{OUT}"], "soup"),
        ("explanation of one run (2 samples)", runs / "k=2-seed=0", [
            "explain", "{OUT}", "--samples", "2", "--no-compare", "--device", "cpu"], "explain"),
        ("transfer curve, wildlife, fraction 1, seed 0", None, [
            "transfer", "wildlife", "--fractions", "1", "--seeds", "0", "--epochs", "1",
            "--device", "cpu", "--set", "image_size=32", "--source-set", "image_size=32",
            "--cache", "{OUT}/cache", "--quiet", "--out", "{OUT}/curve"], "curve"),
    ]
    rows = []
    for what, copy, command, name in commands:
        argv = [*base, "--out", str(tmp / name), *(["--copy", str(copy)] if copy else []),
                "--", *command]
        rows.append({"what": what, **_json_tail(argv)})
    return rows


def bad_inputs() -> tuple[int, int]:
    """Cases handled (passed) out of cases tried, from the corpus test."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(TESTS / "test_bad_input_corpus.py")], capture_output=True,
                          text=True, env=ENV, cwd=ROOT)
    passed = re.search(r"(\d+) passed", done.stdout)
    failed = re.search(r"(\d+) failed", done.stdout)
    handled = int(passed.group(1)) if passed else 0
    return handled, handled + (int(failed.group(1)) if failed else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--command-kills", type=int, default=3)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_kills(Path(tmp), args.kills)
        commands = command_kills(Path(tmp), args.command_kills)
    handled, tried = bad_inputs()
    server = "" if args.skip_server else subprocess.run(
        [sys.executable, str(ROOT / "bench" / "server_soak.py")], capture_output=True,
        text=True, env=ENV).stdout

    lines = [f"## Reliability ({machine()})", "",
             f"`python bench/reliability.py --kills {args.kills} --command-kills "
             f"{args.command_kills}`, {time.monotonic() - started:.0f} s. Each process is "
             "killed with SIGKILL at a random moment (start-up, a training step, evaluation, "
             "the n-th file operation in the run folder, which lands inside checkpoint and "
             "best-epoch writes) and run again with `--resume` (commands: the same command "
             "again). Every checkpoint is read back after every kill; each resume must start "
             "from the newest complete one; the result is compared with an uninterrupted run "
             "(weights bit for bit; JSON results without timings).", "",
             "| what | kills | attempts | resumes checked | result equal to uninterrupted |",
             "|---|---|---|---|---|"]
    for row in runs:
        equal = "error: " + row["error"] if "error" in row else \
            ("yes" if row["weights_equal"] and row["final_metrics_equal"] else "NO")
        lines.append(f"| {row['what']} | {row.get('kills', '—')} | {row.get('attempts', '—')} "
                     f"| {row.get('resumes_checked', '—')} | {equal} |")
    for row in commands:
        equal = "error: " + row["error"] if "error" in row else \
            ("yes" if not row["differing"] else "NO: " + ", ".join(row["differing"][:3]))
        lines.append(f"| {row['what']} | {row.get('kills', '—')} | {row.get('attempts', '—')} "
                     f"| — | {equal} |")
    total = sum(r.get("kills", 0) for r in runs + commands)
    lines += ["", f"Kills survived in all: {total}.", "",
              f"Bad inputs (`tests/test_bad_input_corpus.py`, generated by "
              f"`tests/corpus/make_corpus.py`): **{handled} of {tried}** handled with one line "
              "naming the file, field or value, exit status 2, no traceback, nothing written "
              "over an earlier run.", ""]
    if server:
        lines += [server.replace("## Reliability: server extension soak",
                                 "### Server extension soak (`python bench/server_soak.py`)")]
    write_section("reliability", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
