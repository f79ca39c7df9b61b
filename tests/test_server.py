"""The Jupyter server extension, in a real jupyter_server (pytest-jupyter): what each
endpoint returns, authentication, XSRF, paths confined to the root, broken plugins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from tornado.httpclient import HTTPClientError

from conftest import FAST, install_fake_dist

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ONE_EPOCH = [*FAST[:2], "--epochs", "1", *FAST[4:]]
NO_TOKEN = {"Authorization": ""}


@pytest.fixture(scope="module")
def jp_root_dir(tmp_path_factory):
    """One server root for the module: the real run below is made once inside it."""
    return tmp_path_factory.mktemp("server-root")


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"adaptlab.server": True}}}


@pytest.fixture(scope="module")
def finished_run(jp_root_dir) -> Path:
    """A real wildlife run started 'from' a notebook in the root, then explained; and a
    copy of it that stopped after its checkpoint (no final metrics, no report)."""
    from adaptlab.cli import main

    notebook = jp_root_dir / "nb" / "wildlife.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text(nbformat.writes(nbformat.v4.new_notebook()))
    run_dir = jp_root_dir / "nb" / "runs" / "head"
    saved = os.environ.get("JPY_SESSION_NAME")
    os.environ["JPY_SESSION_NAME"] = str(notebook)  # what jupyter_server gives a kernel
    try:
        assert main(["run", "wildlife", "--out", str(run_dir), *ONE_EPOCH]) == 0
    finally:
        if saved is None:
            os.environ.pop("JPY_SESSION_NAME")
        else:
            os.environ["JPY_SESSION_NAME"] = saved
    assert main(["explain", str(run_dir), "--samples", "2", "--no-checks",
                 "--device", "cpu"]) == 0
    stopped = jp_root_dir / "nb" / "runs" / "stopped"
    shutil.copytree(run_dir, stopped)
    (stopped / "metrics.json").unlink()
    shutil.rmtree(stopped / "report")
    hidden = jp_root_dir / ".cache" / "run"
    shutil.copytree(run_dir, hidden)
    return run_dir


def _json(response) -> dict:
    return json.loads(response.body.decode())


async def _status(fetch, *parts, **kwargs) -> int:
    try:
        response = await fetch(*parts, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    return response.code


async def test_domains_lists_every_installed_domain_with_its_icon(jp_fetch):
    payload = _json(await jp_fetch("adaptlab", "domains"))
    names = [d["name"] for d in payload["domains"]]
    assert {"wildlife", "medical", "code", "timeseries"} <= set(names)
    for domain in payload["domains"]:
        assert domain["title"] and domain["icon"].startswith("<svg")
        assert domain["datasets"] and domain["default_strategy"]
    assert payload["errors"] == []


def test_server_listings_import_no_torch(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from adaptlab.server import _jupyter_server_extension_points
        from adaptlab.server.handlers import handlers
        from adaptlab.server.listing import domains_payload, runs_payload
        handlers("/")
        domains = domains_payload()["domains"]
        runs = runs_payload({str(tmp_path)!r})["runs"]
        heavy = sorted(m for m in ("torch", "timm", "peft", "transformers", "shap", "captum")
                       if m in sys.modules)
        print(json.dumps({{"domains": len(domains), "runs": len(runs), "heavy": heavy}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["domains"] >= 4 and result["runs"] == 0


async def test_a_broken_plugin_is_listed_with_its_error_and_the_others_work(
        jp_fetch, jp_root_dir, tmp_path, monkeypatch, fresh_discovery):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_dist(site, "brokenlab", "brokenlab_plugin",
                      "raise ImportError('needs the missing package frobnicate')\n",
                      "brokenlab_plugin:DOMAIN")
    monkeypatch.syspath_prepend(str(site))
    payload = _json(await jp_fetch("adaptlab", "domains"))
    errors = {e["plugin"]: e["error"] for e in payload["errors"]}
    assert "frobnicate" in errors["brokenlab"]
    assert "wildlife" in [d["name"] for d in payload["domains"]]
    created = await jp_fetch("adaptlab", "notebooks", method="POST",
                             body=json.dumps({"domain": "wildlife", "path": "broken-ok.ipynb"}))
    assert created.code == 201 and (jp_root_dir / "broken-ok.ipynb").is_file()
    assert await _status(jp_fetch, "adaptlab", "notebooks", method="POST",
                         body=json.dumps({"domain": "brokenlab", "path": "b.ipynb"})) == 404
    assert not (jp_root_dir / "b.ipynb").exists()


async def test_a_notebook_is_made_from_the_domain_template_inside_the_root(jp_fetch, jp_root_dir):
    body = {"domain": "medical", "path": "made/medical.ipynb", "parameters": {"QUICK": True}}
    reply = await jp_fetch("adaptlab", "notebooks", method="POST", body=json.dumps(body))
    assert reply.code == 201 and _json(reply)["path"] == "made/medical.ipynb"
    notebook = nbformat.read(jp_root_dir / "made" / "medical.ipynb", as_version=4)
    assert notebook.metadata["adaptlab"]["domain"] == "medical"
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert "QUICK = True" in parameters.source and 'DOMAIN = "medical"' in parameters.source
    before = (jp_root_dir / "made" / "medical.ipynb").read_bytes()
    # An existing notebook is never replaced: 409, or the next free name when asked.
    assert await _status(jp_fetch, "adaptlab", "notebooks", method="POST",
                         body=json.dumps(body)) == 409
    assert (jp_root_dir / "made" / "medical.ipynb").read_bytes() == before
    unique = await jp_fetch("adaptlab", "notebooks", method="POST",
                            body=json.dumps({**body, "unique": True}))
    assert _json(unique)["path"] == "made/medical-1.ipynb"
    # Bad requests are refused by name, and write nothing.
    for bad, fragment in (({"domain": "nope", "path": "x.ipynb"}, "unknown domain 'nope'"),
                          ({"domain": "medical", "path": "x.txt"}, "ending in .ipynb"),
                          ({"domain": "medical", "path": "x.ipynb",
                            "parameters": {"QUICK": "yes"}}, "QUICK='yes' must be bool"),
                          ({"domain": "medical", "path": "x.ipynb",
                            "parameters": {"EPOCHS": 3}}, "'EPOCHS' does not exist")):
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("adaptlab", "notebooks", method="POST", body=json.dumps(bad))
        assert caught.value.code in (400, 404)
        assert fragment in _json(caught.value.response)["message"]
    assert not (jp_root_dir / "x.ipynb").exists() and not (jp_root_dir / "x.txt").exists()


async def test_tutorials_are_listed_by_domain_and_copied_into_the_root(jp_fetch, jp_root_dir):
    repository = Path(__file__).resolve().parent.parent / "notebooks"
    expected = {}
    for path in repository.glob("*.ipynb"):
        expected[path.stem] = json.loads(path.read_text())["metadata"]["adaptlab"]["domain"]
    listed = _json(await jp_fetch("adaptlab", "tutorials"))["tutorials"]
    assert {t["name"]: t["domain"] for t in listed} == expected and expected
    name = sorted(expected)[0]
    body = {"tutorial": name, "path": f"made/{name}.ipynb"}
    reply = await jp_fetch("adaptlab", "notebooks", method="POST", body=json.dumps(body))
    assert reply.code == 201 and _json(reply)["domain"] == expected[name]
    assert (jp_root_dir / "made" / f"{name}.ipynb").read_bytes() == \
        (repository / f"{name}.ipynb").read_bytes()
    assert await _status(jp_fetch, "adaptlab", "notebooks", method="POST",
                         body=json.dumps(body)) == 409
    unique = await jp_fetch("adaptlab", "notebooks", method="POST",
                            body=json.dumps({**body, "unique": True}))
    assert _json(unique)["path"] == f"made/{name}-1.ipynb"
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("adaptlab", "notebooks", method="POST",
                       body=json.dumps({"tutorial": "nope", "path": "x.ipynb"}))
    assert caught.value.code == 404 and "unknown tutorial 'nope'" in \
        _json(caught.value.response)["message"]
    assert not (jp_root_dir / "x.ipynb").exists()


async def test_paths_leaving_the_root_are_refused_and_nothing_is_written(
        jp_fetch, jp_root_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (jp_root_dir / "escape-link").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in jp_root_dir.parent.iterdir())
    attempts = ["../escaped.ipynb", "made/../../escaped.ipynb", str(outside / "abs.ipynb"),
                "escape-link/linked.ipynb", ".hidden/secret.ipynb", "..\\escaped.ipynb"]
    for path in attempts:
        code = await _status(jp_fetch, "adaptlab", "notebooks", method="POST",
                             body=json.dumps({"domain": "wildlife", "path": path}))
        assert code == 403, path
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in jp_root_dir.parent.iterdir()) == before
    assert not (jp_root_dir / ".hidden").exists()
    for run in ("..", "../" + jp_root_dir.name, "/etc", "escape-link"):
        assert await _status(jp_fetch, "adaptlab", "report", params={"run": run}) == 403, run
    assert await _status(jp_fetch, "adaptlab", "report") == 400


async def test_every_endpoint_refuses_a_request_without_a_token(jp_fetch, jp_root_dir):
    for name in ("domains", "runs", "report", "tutorials"):
        assert await _status(jp_fetch, "adaptlab", name, headers=NO_TOKEN) == 403, name
    code = await _status(jp_fetch, "adaptlab", "notebooks", method="POST", headers=NO_TOKEN,
                         body=json.dumps({"domain": "wildlife", "path": "anon.ipynb"}))
    assert code == 403 and not (jp_root_dir / "anon.ipynb").exists()


def _cookies(response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest.split(";")[0]
    return found


async def test_xsrf_is_enforced_on_post_for_a_logged_in_browser(jp_fetch, jp_root_dir,
                                                                 jp_serverapp):
    # Log in as a browser does: the login page sets the _xsrf cookie, posting the token to
    # it sets the login cookie.
    page = await jp_fetch("login", headers=NO_TOKEN)
    xsrf = _cookies(page)["_xsrf"]
    response = None
    try:
        await jp_fetch("login", method="POST", headers={
            **NO_TOKEN, "Cookie": f"_xsrf={xsrf}",
            "Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode({"password": jp_serverapp.identity_provider.token,
                                         "_xsrf": xsrf}), follow_redirects=False)
    except HTTPClientError as exc:  # the redirect after a successful login
        response = exc.response
    assert response is not None and response.code == 302
    session = {k: v for k, v in _cookies(response).items() if k.startswith("username-")}
    assert session, "no login cookie"
    cookie = "; ".join([f"_xsrf={xsrf}", *(f"{k}={v}" for k, v in session.items())])
    body = json.dumps({"domain": "wildlife", "path": "xsrf.ipynb"})
    # The cookie alone lets a browser read...
    assert await _status(jp_fetch, "adaptlab", "domains",
                         headers={**NO_TOKEN, "Cookie": cookie}) == 200
    # ...but a POST without the XSRF header is refused and writes nothing,
    assert await _status(jp_fetch, "adaptlab", "notebooks", method="POST", body=body,
                         headers={**NO_TOKEN, "Cookie": cookie}) == 403
    assert not (jp_root_dir / "xsrf.ipynb").exists()
    # and with it (what JupyterLab's ServerConnection sends) it goes through.
    assert await _status(jp_fetch, "adaptlab", "notebooks", method="POST", body=body,
                         headers={**NO_TOKEN, "Cookie": cookie, "X-XSRFToken": xsrf}) == 201
    assert (jp_root_dir / "xsrf.ipynb").is_file()


@pytest.mark.slow
async def test_runs_lists_status_metric_costs_notebook_and_serves_the_report(
        jp_fetch, finished_run):
    runs = {r["path"]: r for r in _json(await jp_fetch("adaptlab", "runs"))["runs"]}
    assert set(runs) == {"nb/runs/head", "nb/runs/stopped"}  # not the one in .cache
    head = runs["nb/runs/head"]
    metrics = json.loads((finished_run / "metrics.json").read_text())
    costs = json.loads((finished_run / "costs.json").read_text())
    assert head["status"] == "finished" and head["active"] is False
    assert head["monitor"] == metrics["monitor"]
    assert head["metric"] == pytest.approx(metrics["final"]["test"][metrics["monitor"]])
    assert head["baseline_metric"] == pytest.approx(metrics["baseline"]["test"][metrics["monitor"]])
    assert head["trainable_percent"] == pytest.approx(costs["trainable_percent"])
    assert head["training_memory"] == sum(costs["memory_bytes"][k] for k in
                                          ("parameters", "gradients", "optimizer", "activations"))
    assert head["notebook"] == "nb/wildlife.ipynb" and head["report"] is True
    assert head["domain"] == "wildlife" and head["strategy"] == "head"
    stopped = runs["nb/runs/stopped"]
    assert stopped["status"] == "stopped" and stopped["metric"] is None
    assert stopped["report"] is False
    # An unfinished run whose event log is being written is shown as training.
    events = finished_run.parent / "stopped" / "events.jsonl"
    for age, active in ((3600, False), (0, True)):
        stamp = time.time() - age
        os.utime(events, (stamp, stamp))
        runs = {r["path"]: r for r in _json(await jp_fetch("adaptlab", "runs"))["runs"]}
        assert runs["nb/runs/stopped"]["active"] is active

    page = await jp_fetch("adaptlab", "report", params={"run": "nb/runs/head"})
    assert page.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert re.search(r"<title>adaptlab report: head</title>", html)
    assert "data:image/png;base64," in html
    assert await _status(jp_fetch, "adaptlab", "report",
                         params={"run": "nb/runs/stopped"}) == 404


def test_the_install_enables_both_extensions():
    """What ``jupyter labextension list`` and ``jupyter server extension list`` say after
    the README's set-up: the prebuilt front end and the server extension, both enabled."""
    bin_dir = Path(sys.executable).parent
    lab = subprocess.run([str(bin_dir / "jupyter"), "labextension", "list"],
                         capture_output=True, text=True, check=True)
    server = subprocess.run([str(bin_dir / "jupyter"), "server", "extension", "list"],
                            capture_output=True, text=True, check=True)
    plain = re.compile(r"\x1b\[[0-9;]*m")
    lab_lines = plain.sub("", lab.stdout + lab.stderr)
    server_lines = plain.sub("", server.stdout + server.stderr)
    assert re.search(r"@adaptlab/jupyterlab v\S+ enabled OK \(python, adaptlab\)", lab_lines)
    assert re.search(r"adaptlab\.server enabled", server_lines)
    assert re.search(r"adaptlab\.server\s+OK", server_lines)
