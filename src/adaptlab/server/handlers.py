"""The server's HTTP endpoints under ``{base_url}adaptlab/``.

Every handler is a jupyter_server ``APIHandler``: authentication (token or login cookie,
403 without), authorization (resource ``adaptlab``), and XSRF on POST for cookie-authenticated
requests come from jupyter_server itself rather than from code here. Listings walk folders,
so they run on a worker thread and the server's event loop stays free.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.registry import discover_domains
from adaptlab.server.listing import domains_payload, runs_payload
from adaptlab.server.paths import PathRefused, relative_to_root, resolve_inside
from adaptlab.templates import TemplateParameterError, write_template
from adaptlab.tutorial_notebooks import copy_tutorial, list_tutorials

AUTH_RESOURCE = "adaptlab"


class _AdaptlabHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def root(self) -> Path:
        return Path(self.settings["server_root_dir"]).expanduser()

    def resolve(self, relative: str) -> Path:
        try:
            return resolve_inside(self.root, relative,
                                  allow_hidden=bool(getattr(self.contents_manager,
                                                            "allow_hidden", False)))
        except PathRefused as exc:
            raise web.HTTPError(403, str(exc)) from exc

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload))


class DomainsHandler(_AdaptlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await asyncio.to_thread(domains_payload))


class RunsHandler(_AdaptlabHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await asyncio.to_thread(runs_payload, self.root))


def _check_notebook_path(path: Any) -> None:
    if not isinstance(path, str) or not path.endswith(".ipynb"):
        raise web.HTTPError(400, f"field 'path' must be a notebook path ending in .ipynb, "
                            f"got {path!r}")


class NotebooksHandler(_AdaptlabHandler):
    """``POST {"domain", "path", "unique"?, "parameters"?}``: write the domain's template
    notebook at ``path`` (relative to the root). An existing file is never replaced: 409, or
    with ``"unique": true`` the next free name (``wildlife-1.ipynb``, ...). ``POST
    {"tutorial", "path", "unique"?}`` writes a copy of a tutorial notebook the same way."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self._body()
        if "tutorial" in body:
            await self._copy_tutorial(body)
            return
        domain_name, path = body.get("domain"), body.get("path")
        if not isinstance(domain_name, str) or not domain_name:
            raise web.HTTPError(400, "field 'domain' must name an installed domain")
        _check_notebook_path(path)
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise web.HTTPError(400, "field 'parameters' must be an object")
        found = (await asyncio.to_thread(discover_domains)).domains
        if domain_name not in found:
            raise web.HTTPError(404, f"unknown domain {domain_name!r}; installed: {sorted(found)}")
        target = self._new_notebook(path, body.get("unique"), "a template")
        try:
            await asyncio.to_thread(write_template, found[domain_name], target,
                                    parameters=parameters)
        except TemplateParameterError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        except AdaptlabError as exc:  # created by someone else meanwhile
            raise web.HTTPError(409, str(exc)) from exc
        self.reply({"path": relative_to_root(self.root, target), "domain": domain_name}, 201)

    async def _copy_tutorial(self, body: dict[str, Any]) -> None:
        """``{"tutorial": NAME, "path", "unique"?}``: a copy of a tutorial notebook."""
        name, path = body.get("tutorial"), body.get("path")
        _check_notebook_path(path)
        known = {t["name"]: t for t in await asyncio.to_thread(list_tutorials)}
        if name not in known:
            raise web.HTTPError(404, f"unknown tutorial {name!r}; the tutorials: {sorted(known)}")
        target = self._new_notebook(path, body.get("unique"), "a tutorial")
        try:
            await asyncio.to_thread(copy_tutorial, name, target)
        except AdaptlabError as exc:  # created by someone else meanwhile
            raise web.HTTPError(409, str(exc)) from exc
        self.reply({"path": relative_to_root(self.root, target), "tutorial": name,
                    "domain": known[name]["domain"]}, 201)

    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise web.HTTPError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body

    def _new_notebook(self, path: str, unique: Any, what: str) -> Path:
        """Where a new notebook goes: ``path`` inside the root, never over an existing file
        (409, or with ``unique`` the next free name)."""
        target = self.resolve(path)
        if target.exists():
            if not unique:
                raise web.HTTPError(409, f"{path} exists; {what} never replaces a notebook")
            target = self._free_name(target)
        return target

    @staticmethod
    def _free_name(target: Path) -> Path:
        for number in range(1, 1000):
            candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
            if not candidate.exists():
                return candidate
        raise web.HTTPError(409, f"{target.name}: no free name up to -999")


class TutorialsHandler(_AdaptlabHandler):
    """``GET``: the tutorials, ``{"tutorials": [{"name", "title", "paper", "domain"}]}``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"tutorials": await asyncio.to_thread(list_tutorials)})


class ReportHandler(_AdaptlabHandler):
    """``GET ?run=PATH``: the run's attribution report page. Reports embed their images and
    carry no scripts, so the page is served sandboxed with nothing else allowed to load."""

    @property
    def content_security_policy(self) -> str:
        return ("frame-ancestors 'self'; sandbox; default-src 'none'; img-src data:; "
                "style-src 'unsafe-inline'")

    @web.authenticated
    @authorized
    async def get(self) -> None:
        run = self.get_argument("run", "")
        if not run:
            raise web.HTTPError(400, "query parameter 'run' must name a run folder")
        page = self.resolve(run) / "report" / "index.html"
        if not page.is_file():
            raise web.HTTPError(404, f"run {run!r} has no report yet (explain it first)")
        html = await asyncio.to_thread(page.read_text, encoding="utf-8")
        self.finish(html, set_content_type="text/html; charset=utf-8")


def handlers(base_url: str) -> list[tuple[str, type]]:
    return [(url_path_join(base_url, "adaptlab", name), handler)
            for name, handler in (("domains", DomainsHandler), ("runs", RunsHandler),
                                  ("notebooks", NotebooksHandler), ("report", ReportHandler),
                                  ("tutorials", TutorialsHandler))]
