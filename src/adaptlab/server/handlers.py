"""The server's HTTP endpoints under ``{base_url}adaptlab/``.

Every handler is a jupyter_server ``APIHandler``: authentication (token or login cookie,
403 without), authorization (resource ``adaptlab``), and XSRF on POST for cookie-authenticated
requests come from jupyter_server itself rather than from code here. Listings walk folders,
so they run on a worker thread and the server's event loop stays free.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from adaptlab.templates import TemplateParameterError, build_template, write_template
from adaptlab.tutorial_notebooks import copy_tutorial, list_tutorials

AUTH_RESOURCE = "adaptlab"


class _AdaptlabHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def root(self) -> Path:
        return Path(self.settings["server_root_dir"]).expanduser()

    def resolve(self, relative: str) -> Path:
        try:
            return resolve_inside(self.root, relative, allow_hidden=self.allow_hidden)
        except PathRefused as exc:
            raise web.HTTPError(403, str(exc)) from exc

    @property
    def allow_hidden(self) -> bool:
        return bool(getattr(self.contents_manager, "allow_hidden", False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """jupyter_server replies with ``HTTPError.log_message``, which tornado 6.6 returns
        with every '%' doubled: a refused '%2e%2e' would be named as '%%2e%%2e'."""
        error = (kwargs.get("exc_info") or (None, None))[1]
        if not isinstance(error, web.HTTPError) or not error.get_message():
            super().write_error(status_code, **kwargs)
            return
        message = error.get_message()
        self.set_header("Content-Type", "application/json")
        self.log.warning("wrote error: %r", message)
        self.finish(json.dumps({"message": message, "reason": error.reason}))

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
        self.resolve(path)  # a refused path is refused before its parameters are judged
        try:
            # write_template makes the folders before it checks the parameters: checked
            # first, a bad value leaves nothing behind.
            await asyncio.to_thread(build_template, found[domain_name], parameters)
        except TemplateParameterError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        async with self._write_lock:
            target = self._new_notebook(path, body.get("unique"), "a template")
            await self._write(path, target, write_template, found[domain_name], target,
                              parameters=parameters)
        self.reply({"path": relative_to_root(self.root, target), "domain": domain_name}, 201)

    async def _copy_tutorial(self, body: dict[str, Any]) -> None:
        """``{"tutorial": NAME, "path", "unique"?}``: a copy of a tutorial notebook."""
        name, path = body.get("tutorial"), body.get("path")
        if not isinstance(name, str) or not name:  # a list or object is no dict key: a 500
            raise web.HTTPError(400, f"field 'tutorial' must name a tutorial, got {name!r}")
        _check_notebook_path(path)
        known = {t["name"]: t for t in await asyncio.to_thread(list_tutorials)}
        if name not in known:
            raise web.HTTPError(404, f"unknown tutorial {name!r}; the tutorials: {sorted(known)}")
        async with self._write_lock:
            target = self._new_notebook(path, body.get("unique"), "a tutorial")
            await self._write(path, target, copy_tutorial, name, target)
        self.reply({"path": relative_to_root(self.root, target), "tutorial": name,
                    "domain": known[name]["domain"]}, 201)

    @property
    def _write_lock(self) -> asyncio.Lock:
        """One notebook written at a time per server: between the free-name check and the
        write, another request for the same name would otherwise replace this one."""
        return self.settings.setdefault("adaptlab_notebook_lock", asyncio.Lock())

    async def _write(self, path: str, target: Path, write: Any, *args: Any,
                     **kwargs: Any) -> None:
        """``write(*args)`` on a worker thread; on failure, the folders it made are removed."""
        missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
        try:
            await asyncio.to_thread(write, *args, **kwargs)
        except (AdaptlabError, OSError) as exc:
            for folder in missing:  # deepest first; only the empty ones it made
                try:
                    folder.rmdir()
                except OSError:
                    break
            if isinstance(exc, AdaptlabError):  # created by someone else meanwhile
                raise web.HTTPError(409, str(exc)) from exc
            raise web.HTTPError(400, f"cannot write {path!r}: "
                                f"{exc.strerror or type(exc).__name__}") from exc

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
            # lexists: a dangling link is taken too, as writing through it could land
            # outside the root.
            if not os.path.lexists(candidate):
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
        run = self._run_argument()
        if not run.strip():
            raise web.HTTPError(400, "query parameter 'run' must name a run folder")
        run_dir = self.resolve(run)
        try:
            # The run folder is inside the root; its report, or the page, may still be a
            # link to elsewhere.
            page = resolve_inside(self.root,
                                  f"{relative_to_root(self.root, run_dir)}/report/index.html",
                                  allow_hidden=self.allow_hidden)
        except PathRefused as exc:
            raise web.HTTPError(403, f"run {run!r}: its report leads outside the server root "
                                "or into a hidden folder (a symbolic link)") from exc
        if not page.is_file():
            raise web.HTTPError(404, f"run {run!r} has no report yet (explain it first)")
        try:
            html = await asyncio.to_thread(page.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise web.HTTPError(404, f"run {run!r}: its report cannot be read "
                                f"({type(exc).__name__})") from exc
        self.finish(html, set_content_type="text/html; charset=utf-8")

    def _run_argument(self) -> str:
        """``run`` as sent: tornado's ``get_argument`` turns a NUL into a space and strips
        the ends, which would resolve a different path than the one asked for."""
        values = self.request.query_arguments.get("run")
        if not values:
            return ""
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise web.HTTPError(400, f"query parameter 'run' is not UTF-8: {values[-1]!r}") \
                from exc


def handlers(base_url: str) -> list[tuple[str, type]]:
    return [(url_path_join(base_url, "adaptlab", name), handler)
            for name, handler in (("domains", DomainsHandler), ("runs", RunsHandler),
                                  ("notebooks", NotebooksHandler), ("report", ReportHandler),
                                  ("tutorials", TutorialsHandler))]
