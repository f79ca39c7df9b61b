"""Find installed domain plugins through the ``adaptlab.domains`` entry-point group.

Each plugin loads in isolation: an import error, invalid metadata or an import that does
not finish within ``ADAPTLAB_PLUGIN_IMPORT_TIMEOUT`` seconds is recorded with its reason and
the plugin is skipped; the others still load.

Discovery runs once per process: the CLI, the server handlers and the widgets all ask for
the domains, and reading every distribution's entry points (and logging a broken plugin)
each time would be slow and noisy. :func:`clear_discovery_cache` forgets the result, for a
test or a notebook that installs a plugin while the process runs.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DomainSpec

ENTRY_POINT_GROUP = "adaptlab.domains"
IMPORT_TIMEOUT_ENV = "ADAPTLAB_PLUGIN_IMPORT_TIMEOUT"
# Generous: a plugin module is metadata only, but a cold disk or a network home folder can
# make a first import slow, and a healthy plugin reported as hung is worse than a wait.
DEFAULT_IMPORT_TIMEOUT = 20.0

logger = logging.getLogger(__name__)


@dataclass
class DiscoveryResult:
    """The domains that loaded, by name, and ``{"plugin", "error"}`` for those that did not."""

    domains: dict[str, DomainSpec] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)


def import_timeout() -> float:
    """Seconds one plugin may take to import (``ADAPTLAB_PLUGIN_IMPORT_TIMEOUT``)."""
    raw = os.environ.get(IMPORT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_IMPORT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        # Discovery never raises; a typo here must not take every domain down.
        logger.warning("adaptlab: %s=%r is not a positive number of seconds; using %g",
                       IMPORT_TIMEOUT_ENV, raw, DEFAULT_IMPORT_TIMEOUT)
        return DEFAULT_IMPORT_TIMEOUT
    return value


class PluginImportTimeout(Exception):
    """A plugin's import (or its spec factory) did not return in time."""


def _load_one(entry_point) -> DomainSpec:
    loaded = entry_point.load()
    spec = loaded() if callable(loaded) and not isinstance(loaded, DomainSpec) else loaded
    if not isinstance(spec, DomainSpec):
        raise TypeError(f"entry point gives {type(spec).__name__}, expected a DomainSpec")
    spec.validate()
    return spec


class _BoundedImport:
    """``_load_one`` in a worker thread, waited for a bounded time.

    Trade-off: Python cannot kill a thread, so a plugin that hangs keeps its thread (a
    daemon: it never holds up the process's exit) and the lock on its half-imported module;
    it stays unusable for the life of the process, and a busy loop keeps costing CPU. The
    alternative, importing each plugin in a subprocess that can be killed, would cost a
    fresh interpreter per ``adaptlab domains`` and could not hand back the live
    ``DomainSpec`` (its loaders are named by reference, but template cells and defaults
    would have to survive a round trip). A hang in C code that never releases the GIL is
    beyond this bound too; a plugin module that only declares metadata has no such code.
    """

    def __init__(self, entry_point) -> None:
        self.entry_point = entry_point
        self.outcome: dict[str, object] = {}
        self.worker = threading.Thread(target=self._target, daemon=True,
                                       name=f"adaptlab-plugin-import-{entry_point.name}")
        self.worker.start()

    def _target(self) -> None:
        try:
            self.outcome["spec"] = _load_one(self.entry_point)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin included
            self.outcome["error"] = exc

    def wait(self, seconds: float) -> None:
        """Wait at most ``seconds`` for the import to finish."""
        self.worker.join(max(0.0, seconds))

    def spec(self, timeout: float) -> DomainSpec:
        """The plugin's spec, or the error that names why it has none."""
        if self.worker.is_alive():
            raise PluginImportTimeout(
                f"did not finish importing within {timeout:g} s, nor in {timeout:g} s more "
                f"after the other plugins (entry point {self.entry_point.value}; set "
                f"{IMPORT_TIMEOUT_ENV} to wait longer)")
        if "error" in self.outcome:
            error = self.outcome["error"]
            if isinstance(error, Exception):
                raise error
            # SystemExit or KeyboardInterrupt raised by a plugin's import is its failure, not
            # a request to stop this process.
            raise RuntimeError(f"import raised {type(error).__name__}: {error}")
        return self.outcome["spec"]  # type: ignore[return-value]


# Discovery is cached, but a server asks from several threads at once: without the lock each
# would import (and, for a hanging plugin, wait out the timeout) on its own.
_discover_lock = threading.Lock()

# A plugin whose import busy-loops keeps the GIL, and every import after it waits for the GIL
# at each release (each file it reads) up to the switch interval, 5 ms by default: behind one,
# a plugin that imports in 0.1 s alone took over 5 s on a loaded machine. Discovery switches
# every 0.5 ms while it waits, and gives each import that ran out of time a second window
# after the others, so a sibling's hang is not counted against a healthy plugin.
_DISCOVERY_SWITCH_INTERVAL = 0.0005


@functools.cache
def _discover_cached() -> DiscoveryResult:
    result = DiscoveryResult()
    timeout = import_timeout()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, _DISCOVERY_SWITCH_INTERVAL))
    imports: list[_BoundedImport] = []
    try:
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP),
                                  key=lambda ep: ep.name):
            imports.append(_BoundedImport(entry_point))
            imports[-1].wait(timeout)
        deadline = time.monotonic() + timeout
        for late in imports:
            late.wait(deadline - time.monotonic())
    finally:
        # A hung import's thread lives on, and if it busy-loops, so do the waits: once an
        # import has hung, the short interval stays for the rest of the process (every later
        # import pays the waits; nothing watches for the thread's end to restore it).
        if not any(bounded.worker.is_alive() for bounded in imports):
            sys.setswitchinterval(interval)
    for bounded in imports:
        name = bounded.entry_point.name
        try:
            spec = bounded.spec(timeout)
        except Exception as exc:  # noqa: BLE001 - isolation is the point: report and go on
            result.errors.append({"plugin": name,
                                  "error": str(exc) if isinstance(exc, PluginImportTimeout)
                                  else f"{type(exc).__name__}: {exc}"})
            continue
        if spec.name in result.domains:
            result.errors.append({"plugin": name,
                                  "error": f"domain name {spec.name!r} is already registered"})
            continue
        result.domains[spec.name] = spec
    for error in result.errors:  # once per process: the result is cached
        logger.warning("adaptlab: domain plugin %r skipped: %s", error["plugin"], error["error"])
    return result


def _discover() -> DiscoveryResult:
    with _discover_lock:
        return _discover_cached()


def discover_domains() -> DiscoveryResult:
    """Every installed domain's metadata; never raises for a broken plugin.

    Read once per process; the result is a copy, so a caller may change it freely.
    """
    found = _discover()
    return DiscoveryResult(dict(found.domains), [dict(error) for error in found.errors])


def clear_discovery_cache() -> None:
    """Forget the discovered domains: the next call reads the entry points again."""
    with _discover_lock:
        _discover_cached.cache_clear()


def get_domain(name: str) -> DomainSpec:
    """The installed domain called ``name``, or an error listing what is installed."""
    found = discover_domains()
    if name in found.domains:
        return found.domains[name]
    broken = [e for e in found.errors if e["plugin"] == name]
    if broken:
        raise AdaptlabError(f"domain {name!r} failed to load: {broken[0]['error']}")
    raise AdaptlabError(f"unknown domain {name!r}; installed: {sorted(found.domains)}")
