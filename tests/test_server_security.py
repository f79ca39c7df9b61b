"""The server extension under hostile or careless requests, in a real jupyter_server: no
credentials, cookie sessions without XSRF, paths that try to leave the root in every
spelling, links that lead out, malformed run folders, racing writes, and a long mixed
session that must not leak open files."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from pathlib import Path

import psutil
import pytest
from test_server import _cookies
from tornado.httpclient import HTTPClientError

from adaptlab.server.handlers import handlers

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NO_TOKEN = {"Authorization": ""}
NOTEBOOK = {"domain": "wildlife", "path": "anon.ipynb"}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"adaptlab.server": True}}}


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the server root: nothing may ever appear in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


async def _answer(fetch, *parts, **kwargs) -> tuple[int, dict | str]:
    """Status and body (JSON when it is) of a request, errors included."""
    try:
        response = await fetch(*parts, **kwargs)
    except HTTPClientError as exc:
        response = exc.response
        if response is None:
            raise
    text = response.body.decode(errors="replace")
    try:
        return response.code, json.loads(text)
    except ValueError:
        return response.code, text


def _tree(*roots: Path) -> list[str]:
    """Every entry under the roots, links included as links: a write anywhere shows."""
    seen = []
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            for name in [*subfolders, *files]:
                path = Path(folder, name)
                seen.append(f"{path}|{os.readlink(path) if path.is_symlink() else ''}|"
                            f"{path.lstat().st_size if path.is_file() else ''}")
    return sorted(seen)


def fake_run(folder: Path, report: bool = False, metric: float = 0.5) -> Path:
    """The files a finished run folder holds, as far as listing and serving read them."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(
        {"domain": "wildlife", "strategy": "head", "backbone": "resnet18", "data": "d"}))
    (folder / "events.jsonl").write_text('{"event": "epoch"}\n')
    (folder / "metrics.json").write_text(json.dumps(
        {"final": {"test": {"accuracy": metric}}, "monitor": "accuracy", "epochs_run": 1}))
    if report:
        (folder / "report").mkdir()
        (folder / "report" / "index.html").write_text(f"<title>{folder.name}</title>")
    return folder


def _served_routes() -> list[tuple[str, str]]:
    """(endpoint, method) for every method every route implements: a route added later is
    covered here without editing the test."""
    routes = []
    for pattern, handler in handlers("/"):
        for method in HTTP_METHODS:
            if method in vars(handler):
                routes.append((pattern.rsplit("/", 1)[-1], method.upper()))
    return routes


async def test_every_endpoint_and_method_refuses_a_request_without_credentials(
        jp_fetch, jp_root_dir, outside):
    routes = _served_routes()
    assert {"domains", "runs", "notebooks", "report", "tutorials"} <= {r for r, _ in routes}
    fake_run(jp_root_dir / "r", report=True)
    before = _tree(jp_root_dir, outside)
    for headers in (NO_TOKEN, {"Authorization": "token not-the-token"}):
        for endpoint, method in routes:
            body = json.dumps(NOTEBOOK) if method != "GET" else None
            code, reply = await _answer(jp_fetch, "adaptlab", endpoint, method=method,
                                        headers=headers, body=body, params={"run": "r"})
            assert code == 403, (endpoint, method, headers)
            assert "<title>r</title>" not in str(reply)
        # Methods a route does not implement are never served either.
        for endpoint, _ in routes:
            code, _ = await _answer(jp_fetch, "adaptlab", endpoint, method="PUT",
                                    headers=headers, body="{}")
            assert code in (403, 405), endpoint
    assert _tree(jp_root_dir, outside) == before


async def _browser_login(jp_fetch, jp_serverapp) -> tuple[str, str]:
    """The (cookie header, xsrf token) a browser holds after logging in with the token."""
    xsrf = _cookies(await jp_fetch("login", headers=NO_TOKEN))["_xsrf"]
    session = {}
    try:
        await jp_fetch("login", method="POST", follow_redirects=False, headers={
            **NO_TOKEN, "Cookie": f"_xsrf={xsrf}",
            "Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode({"password": jp_serverapp.identity_provider.token,
                                         "_xsrf": xsrf}))
    except HTTPClientError as exc:  # the redirect after a successful login
        session = {k: v for k, v in _cookies(exc.response).items() if k.startswith("username-")}
    assert session, "no login cookie"
    return "; ".join([f"_xsrf={xsrf}", *(f"{k}={v}" for k, v in session.items())]), xsrf


async def test_a_cookie_session_cannot_post_without_the_matching_xsrf_token(
        jp_fetch, jp_root_dir, jp_serverapp):
    cookie, xsrf = await _browser_login(jp_fetch, jp_serverapp)
    tutorial = (await jp_fetch("adaptlab", "tutorials", headers={**NO_TOKEN, "Cookie": cookie}))
    name = json.loads(tutorial.body)["tutorials"][0]["name"]
    bodies = [{"domain": "wildlife", "path": "x.ipynb"}, {"tutorial": name, "path": "x.ipynb"}]
    for body in bodies:
        for extra in ({}, {"X-XSRFToken": "forged"}, {"X-XSRFToken": ""}):
            code, _ = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                                    body=json.dumps(body),
                                    headers={**NO_TOKEN, "Cookie": cookie, **extra})
            assert code == 403, (body, extra)
        # Nor with the token sent as a form field of a forged cross-site POST of JSON.
        code, _ = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                                body=json.dumps(body), params={"_xsrf": "forged"},
                                headers={**NO_TOKEN, "Cookie": cookie})
        assert code == 403
    assert not (jp_root_dir / "x.ipynb").exists()
    code, _ = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                            body=json.dumps(bodies[1]),
                            headers={**NO_TOKEN, "Cookie": cookie, "X-XSRFToken": xsrf})
    assert code == 201 and (jp_root_dir / "x.ipynb").is_file()


# Each spelling of "somewhere other than a plain path under the root"; OUTSIDE stands for
# the folder beside the root (its absolute path without the leading slash).
ESCAPES = ["../x.ipynb", "a/../../x.ipynb", "a/b/../../../x.ipynb", "/OUTSIDE/x.ipynb",
           "//OUTSIDE/x.ipynb", "..\\x.ipynb", "a\\..\\..\\x.ipynb", "\\x.ipynb", "C:/x.ipynb",
           "C:x.ipynb", "a\x00.ipynb", "a/\x00/../x.ipynb", "%2e%2e/x.ipynb",
           "%2E%2E%2Fx.ipynb", "..%2fx.ipynb", "a%2f..%2f..%2fx.ipynb", "%252e%252e/x.ipynb",
           "%25252e%25252e/x.ipynb", "%2fOUTSIDE%2fx.ipynb", "%5c..%5cx.ipynb", "a%00.ipynb",
           "%2ehidden/x.ipynb", ".hidden/x.ipynb", "link-out/x.ipynb", "link-out/../x.ipynb",
           "dangling.ipynb", "to-hidden/x.ipynb", "\ud800.ipynb", "n" * 300 + ".ipynb"]


def _plant_links(root: Path, outside: Path) -> None:
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "dangling.ipynb").symlink_to(outside / "planted.ipynb")
    (root / ".hidden").mkdir()
    (root / "to-hidden").symlink_to(root / ".hidden", target_is_directory=True)


def _check_refusal(code: int, reply, value: str, wanted: int = 403) -> None:
    assert code == wanted, (value, code, reply)
    message = reply["message"]
    assert "\n" not in message and len(message) < 600, message
    # The offending value is named, or its start when it is very long.
    assert repr(value)[:40] in message, (value, message)


async def test_paths_leaving_the_root_are_refused_in_every_spelling_and_nothing_is_written(
        jp_fetch, jp_root_dir, outside):
    _plant_links(jp_root_dir, outside)
    tutorial = json.loads((await jp_fetch("adaptlab", "tutorials")).body)["tutorials"][0]
    before = _tree(jp_root_dir, outside)
    for escape in ESCAPES:
        path = escape.replace("OUTSIDE", str(outside).lstrip("/"))
        for body in ({"domain": "wildlife", "path": path},
                     {"domain": "medical", "path": path, "unique": True,
                      "parameters": {"QUICK": True}},
                     {"tutorial": tutorial["name"], "path": path, "unique": True}):
            code, reply = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                                        body=json.dumps(body))
            _check_refusal(code, reply, path)
    assert _tree(jp_root_dir, outside) == before


async def test_a_run_folder_outside_the_root_is_never_served(jp_fetch, jp_root_dir, outside):
    _plant_links(jp_root_dir, outside)
    secret = "<title>outside</title>"
    far = fake_run(outside / "run", report=True)
    (far / "report" / "index.html").write_text(secret)
    (jp_root_dir / "run-link").symlink_to(far, target_is_directory=True)
    # A run inside the root whose report folder, or page, is a link to elsewhere.
    near = fake_run(jp_root_dir / "near")
    (near / "report").symlink_to(far / "report", target_is_directory=True)
    page_link = fake_run(jp_root_dir / "page-link")
    (page_link / "report").mkdir()
    (page_link / "report" / "index.html").symlink_to(far / "report" / "index.html")
    hidden = fake_run(jp_root_dir / ".hidden" / "run", report=True)
    (jp_root_dir / "hidden-link").symlink_to(hidden, target_is_directory=True)
    inside = fake_run(jp_root_dir / "inside", report=True)

    listed = {r["path"] for r in json.loads((await jp_fetch("adaptlab", "runs")).body)["runs"]}
    assert listed == {"near", "page-link", "inside"}
    runs = ["..", "../root_dir", str(outside), str(far), "run-link", "link-out/run",
            "near", "page-link", "hidden-link", ".hidden/run", "%2e%2e", "inside/..%2f..",
            "inside\x00", "inside\\..\\..", "%252e%252e"]
    for run in runs:
        code, reply = await _answer(jp_fetch, "adaptlab", "report", params={"run": run})
        assert secret not in str(reply) and "<title>run</title>" not in str(reply)
        _check_refusal(code, reply, run)
    page = await jp_fetch("adaptlab", "report", params={"run": "inside"})
    assert page.body.decode() == f"<title>{inside.name}</title>"


async def test_a_refused_notebook_leaves_no_folder_and_no_file(jp_fetch, jp_root_dir):
    (jp_root_dir / "file.ipynb").write_text("{}")
    before = _tree(jp_root_dir)
    bad = [({"domain": "medical", "path": "new/deeper/x.ipynb",
             "parameters": {"QUICK": "yes"}}, 400, "QUICK='yes' must be bool"),
           ({"domain": "medical", "path": "file.ipynb/x.ipynb"}, 400, "'file.ipynb/x.ipynb'"),
           ({"domain": "medical", "path": "new/../../x.ipynb"}, 403, "'new/../../x.ipynb'"),
           ({"tutorial": ["a"], "path": "new/x.ipynb"}, 400, "['a']"),
           ({"domain": {"a": 1}, "path": "new/x.ipynb"}, 400, "'domain'"),
           ({"domain": "medical", "path": ["new/x.ipynb"]}, 400, "['new/x.ipynb']")]
    for body, wanted, fragment in bad:
        code, reply = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                                    body=json.dumps(body))
        assert code == wanted and fragment in reply["message"], (body, code, reply)
        assert "\n" not in reply["message"]
    assert _tree(jp_root_dir) == before


async def test_a_unique_name_never_writes_through_a_link(jp_fetch, jp_root_dir, outside):
    tutorial = json.loads((await jp_fetch("adaptlab", "tutorials")).body)["tutorials"][0]
    (jp_root_dir / "nb.ipynb").write_text("{}")
    (jp_root_dir / "nb-1.ipynb").symlink_to(outside / "planted.ipynb")
    for body in ({"tutorial": tutorial["name"], "path": "nb.ipynb", "unique": True},
                 {"domain": "wildlife", "path": "nb.ipynb", "unique": True}):
        reply = await jp_fetch("adaptlab", "notebooks", method="POST", body=json.dumps(body))
        assert json.loads(reply.body)["path"] in ("nb-2.ipynb", "nb-3.ipynb")
    assert list(outside.iterdir()) == [] and (jp_root_dir / "nb-1.ipynb").is_symlink()


async def test_racing_requests_for_one_name_each_get_their_own_notebook(jp_fetch, jp_root_dir):
    body = json.dumps({"domain": "wildlife", "path": "race.ipynb", "unique": True})
    replies = await asyncio.gather(*(jp_fetch("adaptlab", "notebooks", method="POST", body=body)
                                     for _ in range(12)))
    paths = [json.loads(r.body)["path"] for r in replies]
    assert len(set(paths)) == 12
    assert sorted(p.name for p in jp_root_dir.glob("race*.ipynb")) == sorted(paths)


async def test_one_malformed_run_folder_does_not_break_the_listing(jp_fetch, jp_root_dir):
    fake_run(jp_root_dir / "good")
    for name, metrics in (("no-final", "{}"), ("a-list", "[]"), ("not-json", "{")):
        (fake_run(jp_root_dir / name) / "metrics.json").write_text(metrics)
    (fake_run(jp_root_dir / "config-list") / "config.json").write_text("[1]")
    (fake_run(jp_root_dir / "odd-origin") / "origin.json").write_text('{"notebook": 3}')
    runs = {r["path"]: r for r in json.loads((await jp_fetch("adaptlab", "runs")).body)["runs"]}
    assert runs["good"]["status"] == "finished" and runs["good"]["metric"] == 0.5
    for name in ("no-final", "a-list", "not-json", "config-list", "odd-origin"):
        assert runs[name]["status"] == "unreadable" and runs[name]["error"], runs[name]


async def test_the_listing_shows_500_runs_and_says_when_there_are_more(jp_fetch, jp_root_dir):
    for index in range(500):
        fake_run(jp_root_dir / "runs" / f"run-{index:03d}")
    payload = json.loads((await jp_fetch("adaptlab", "runs")).body)
    assert len(payload["runs"]) == 500 and payload["truncated"] is False
    fake_run(jp_root_dir / "runs" / "one-more")
    payload = json.loads((await jp_fetch("adaptlab", "runs")).body)
    assert len(payload["runs"]) == 500 and payload["truncated"] is True


# Open files may grow by a few while the server settles (a log file, a cached connection);
# a leak grows with the number of requests, 100 here.
FD_SLACK = 5


async def test_a_long_mixed_session_leaks_no_open_files(jp_fetch, jp_root_dir):
    fake_run(jp_root_dir / "runs" / "a", report=True)
    fake_run(jp_root_dir / "runs" / "b")
    tutorial = json.loads((await jp_fetch("adaptlab", "tutorials")).body)["tutorials"][0]

    async def mixed(count: int) -> list[int]:
        codes = []
        for index in range(count):
            kind = index % 5
            if kind == 0:
                body = {"domain": "wildlife", "path": "soak/nb.ipynb", "unique": True}
            elif kind == 1:
                body = {"tutorial": tutorial["name"], "path": "soak/t.ipynb", "unique": True}
            if kind in (0, 1):
                code, _ = await _answer(jp_fetch, "adaptlab", "notebooks", method="POST",
                                        body=json.dumps(body))
            else:
                name, params = (("runs", None), ("domains", None),
                                ("report", {"run": "runs/a"}))[kind - 2]
                code, _ = await _answer(jp_fetch, "adaptlab", name, params=params)
            codes.append(code)
        return codes

    process = psutil.Process()
    await mixed(10)  # first use opens what stays open (plugin metadata, thread pool)
    before = process.num_fds()
    codes = await mixed(100)
    after = process.num_fds()
    assert set(codes) <= {200, 201}, sorted(set(codes))
    assert after - before <= FD_SLACK, (before, after)
    assert len(list((jp_root_dir / "soak").glob("*.ipynb"))) == 44
