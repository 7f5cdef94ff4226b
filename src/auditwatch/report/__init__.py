"""The HTML report of a run: ``auditwatch report``.

``reader`` finds the run and streams its records, ``aggregate`` keeps what the page
shows in bounded memory, ``pagedata`` turns that into the page's JSON, and
``render`` fills the Jinja2 template. :func:`build_report` does all four.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditwatch.report.aggregate import Report
from auditwatch.report.pagedata import page_data
from auditwatch.report.reader import (
    ReportError,
    RunSource,
    count_lines,
    find_run,
    read_json,
    read_records,
)
from auditwatch.report.render import render

__all__ = ["ReportError", "RunSource", "build_report", "find_run", "report_data"]


def report_data(source: RunSource, rows: int = 5000, context: int = 5) -> dict[str, Any]:
    """The page's data for a run: one streaming pass over its records."""
    report = Report(rows=rows, context=context).add_all(read_records(source))
    command_file = read_json(source.path / "command.json")
    summary = read_json(source.path / "summary.json")
    command: Any | None = command_file.get("argv") if isinstance(command_file, dict) else None
    exit_code = summary.get("exit_code") if isinstance(summary, dict) else None
    rejected = count_lines(source.path / "rejected.jsonl")
    return page_data(report, str(source.records), command, exit_code, rejected)


def build_report(
    run: str | None, output: Path, rows: int = 5000, context: int = 5
) -> dict[str, Any]:
    """Write the report of RUN to ``output``; returns the page's ``meta``."""
    source = find_run(run)
    data = report_data(source, rows, context)
    html = render(data)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return data["meta"]
