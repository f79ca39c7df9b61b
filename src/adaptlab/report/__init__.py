"""The run report: ``report/index.html`` (self-contained) and ``report/attributions.json``."""

from __future__ import annotations

from adaptlab.report.write import write_report

__all__ = ["write_report"]
