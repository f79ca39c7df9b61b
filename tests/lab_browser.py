"""A real ``jupyter lab`` and Debian's Chromium for the browser tests: start the server in a
temp folder, open pages, and the guards against JupyterLab's start-up races."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

OUTPUT = Path(os.environ.get("ADAPTLAB_TEST_OUTPUT", Path(__file__).parent.parent / "test-output"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "adaptlab-test-token"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage"]
NO_NEWS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                           "checkForUpdates": False}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(tmp_path: Path, settings_overrides: dict | None = None,
                extra_args: tuple[str, ...] = ()):
    """A real ``jupyter lab`` on a free port, its state in a temp folder; yields its URL and
    root. ``settings_overrides`` are merged into JupyterLab's ``overrides.json`` (settings
    defaults, as an administrator sets them)."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    settings = state / "app-settings"
    settings.mkdir(parents=True)
    (settings / "overrides.json").write_text(json.dumps({**NO_NEWS,
                                                         **(settings_overrides or {})}))
    env = {**os.environ, **{name: str(state / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR")},
        "HF_HUB_OFFLINE": "1"}
    port = _free_port()
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
         "--port", str(port), f"--IdentityProvider.token={TOKEN}", "--allow-root",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         f"--LabApp.app_settings_dir={settings}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *extra_args],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("jupyter lab did not start: " +
                                 (tmp_path / "jupyter.log").read_text()[-2000:])
        yield url, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@contextlib.contextmanager
def chromium_page(tmp_path: Path):
    """A page of a fresh headless Chromium profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=BROWSER_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield browser.new_page()
        finally:
            browser.close()


def accept_dialogs(page, seen: list[str]) -> None:
    """JupyterLab may open a dialog (the kernel choice, when the kernel list arrives late on
    a loaded machine): keep its text and accept it, as a user would."""
    dialogs = page.locator(".jp-Dialog")
    while dialogs.count():
        seen.append(" ".join(dialogs.first.inner_text().split()))
        dialogs.first.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def wait_accepting_dialogs(page, locator, seen: list[str], timeout_s: float,
                           state: str = "visible") -> None:
    """Wait for ``locator`` while accepting any dialog JupyterLab opens meanwhile: a kernel
    choice that appears after Run All (the first kernel of a new notebook replaced while it
    starts) otherwise blocks every cell after the first until the wait runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        accept_dialogs(page, seen)
        try:
            locator.first.wait_for(state=state, timeout=5_000)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def run_all_when_idle(page, seen: list[str]) -> None:
    """The kernel-not-ready flake: "Run All" before the kernel connects runs nothing. Wait
    for the status bar to say Idle, run all, and retry once if no prompt starts."""
    idle = page.get_by_text("Kernel status: Idle")
    deadline = time.monotonic() + 120
    # Read once per pass: the status flips between Idle and Busy while the kernel starts,
    # so a second read may disagree with the first.
    ready = False
    while not ready and time.monotonic() < deadline:
        accept_dialogs(page, seen)
        ready = idle.count() > 0
        if not ready:
            page.wait_for_timeout(500)
    assert ready, "the kernel never became idle"
    for attempt in range(2):
        accept_dialogs(page, seen)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.locator(".jp-InputPrompt").filter(
                has_text="[*]").or_(page.locator(".jp-InputPrompt").filter(
                    has_text="[1]")).first.wait_for(timeout=20_000)
            return
        except Exception:
            if attempt:
                raise


def run_all_until_panel(page, url: str, notebook: str, seen: list[str], timeout_s: float,
                        stalled_shot: Path) -> None:
    """Run All and wait for the setup panel; when it does not come, reopen the notebook and
    run all again, as a user would. Seen on fresh machines (in both browser tests): JupyterLab
    replaced the notebook's kernel while it started, and no cell after the first ran. The
    stalled page is kept as a screenshot."""
    panel = page.locator(".adaptlab-setup-panel")
    run_all_when_idle(page, seen)
    try:
        wait_accepting_dialogs(page, panel, seen, timeout_s)
    except Exception:
        page.screenshot(path=str(stalled_shot))
        page.goto(f"{url}/lab/tree/{notebook}?token={TOKEN}")
        page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
        run_all_when_idle(page, seen)
        wait_accepting_dialogs(page, panel, seen, timeout_s)
