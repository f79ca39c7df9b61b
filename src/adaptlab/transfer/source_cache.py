"""Pre-trained source runs, cached by their configuration and reused.

A source run is keyed by a hash of everything that shapes its weights (the whole RunConfig
except where it is written and which device ran it), so the same source is trained once and
every learning curve, seed and strategy after that starts from it. A cached run that stopped
early (a crash, Ctrl-C) is resumed from its checkpoint, never started over, and every use
says whether it trained, resumed or reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from adaptlab.config import EXECUTION_FIELDS, RunConfig

# Fields that do not change what a run learns.
NOT_IN_KEY = ("out", *EXECUTION_FIELDS)


def cache_root() -> Path:
    """``$ADAPTLAB_CACHE``, else ``~/.cache/adaptlab``."""
    return Path(os.environ.get("ADAPTLAB_CACHE") or Path.home() / ".cache" / "adaptlab")


def source_key(config: RunConfig) -> str:
    # Options resolved: the default a source trained with is part of what shaped it, and an
    # option given at its default names the same source as one left unset.
    fields = {k: v for k, v in dataclasses.asdict(config.with_resolved_options()).items()
              if k not in NOT_IN_KEY}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceRun:
    run_dir: Path
    key: str
    action: str  # "trained", "resumed" or "reused"

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "key": self.key, "action": self.action}


def complete_run(config: RunConfig, progress: bool = True) -> str:
    """Bring the run in ``config.out`` to its end: ``"reused"`` when it had finished,
    ``"resumed"`` from its checkpoint, or ``"trained"`` from the start (a folder left by a
    run that died before its first checkpoint holds nothing to keep and is cleared)."""
    import shutil

    from adaptlab.compare import resumable
    from adaptlab.errors import AdaptlabError
    from adaptlab.run import run

    run_dir = Path(config.out)
    if (run_dir / "metrics.json").is_file():
        return "reused"
    resume = resumable(run_dir)
    if run_dir.is_dir() and not resume:
        shutil.rmtree(run_dir)
    run(config, resume=resume, progress=progress)
    if not (run_dir / "metrics.json").is_file():
        raise AdaptlabError(f"{run_dir} stopped before finishing; run again to resume it")
    return "resumed" if resume else "trained"


def ensure_source_run(config: RunConfig, cache_dir: str | Path | None = None,
                      progress: bool = True) -> SourceRun:
    """The finished source run for ``config``: reused from the cache, resumed, or trained."""
    key = source_key(config)
    run_dir = Path(cache_dir or cache_root()) / "sources" / f"{config.domain}-{key}"
    if not (run_dir / "metrics.json").is_file():
        from adaptlab.compare import resumable

        print(f"source: {'resuming' if resumable(run_dir) else 'training'} {run_dir} "
              f"(dataset {config.dataset or config.data}, key {key})", file=sys.stderr)
    action = complete_run(dataclasses.replace(config, out=str(run_dir)), progress)
    if action == "reused":
        print(f"source: reusing the cached run {run_dir} (key {key})", file=sys.stderr)
    return SourceRun(run_dir, key, action)
