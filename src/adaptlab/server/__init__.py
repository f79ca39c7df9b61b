"""The Jupyter server extension: ``/adaptlab/domains``, ``/adaptlab/notebooks``,
``/adaptlab/runs`` and ``/adaptlab/report``, for the JupyterLab front end in ``extension/``.

Installing the package enables it (a ``jupyter_server_config.d`` file in the wheel). Loading
it registers routes only: domains and runs are read on request, and never with torch, so
the server starts as fast as without it (measured in BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "adaptlab.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from adaptlab.server.handlers import handlers

    web_app = serverapp.web_app
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("adaptlab server extension loaded")
