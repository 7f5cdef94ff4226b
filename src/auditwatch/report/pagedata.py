"""What the page embeds: a run's aggregates turned into compact, bounded JSON.

Tables are ``{"id", "title", "columns", "rows", "total"}``; each row is an array of
cells followed by the processes (run indexes, or ``{run index: count}``) and the
event names (indexes into ``events``) it involves, for the page's filters. Time cells
are nanoseconds since the epoch; the page shows them relative to the first record.
"""

from __future__ import annotations

import os
from typing import Any

from auditwatch.catalog import CATEGORIES
from auditwatch.report import describe as d
from auditwatch.report.aggregate import COLUMNS, RUNS_MAX, Report, RunInfo


def _rel(report: Report, ts: int | None) -> int | None:
    """Nanoseconds since the run's first record: exact in JavaScript numbers, unlike
    nanoseconds since the epoch."""
    if ts is None or report.first_ts is None:
        return None
    return ts - report.first_ts


def _column(name: str, kind: str = "text") -> dict[str, str]:
    return {"name": name, "type": kind}


def _table(
    table_id: str,
    title: str,
    columns: list[dict[str, str]],
    rows: list[list],
    total: int,
    **extra: Any,
) -> dict[str, Any]:
    out = {"id": table_id, "title": title, "columns": columns, "rows": rows, "total": total}
    out.update(extra)
    return out


def _argv(info: RunInfo) -> list[str]:
    argv = info.proc.get("argv")
    return [d.clip(str(a), 300) for a in argv[:50]] if isinstance(argv, list) else []


def replaced_by_exec(report: Report) -> set:
    """Runs whose image was replaced by exec: a child run with the same pid follows."""
    children = {(r.parent_run, r.pid) for r in report.runs.values()}
    exec_index = report.names.get("os.exec")
    return {
        r.run
        for r in report.runs.values()
        if r.exit is None
        and r.last_ni is not None
        and r.last_ni == exec_index
        and (r.run, r.pid) in children
    }


def runs_data(report: Report) -> list[dict[str, Any]]:
    replaced = replaced_by_exec(report)
    out = []
    for info in list(report.runs.values())[:RUNS_MAX]:
        parent = report.runs.get(info.parent_run) if info.parent_run else None
        proc = info.proc
        out.append(
            {
                "run": info.run,
                "parent": parent.index if parent is not None else None,
                "parentRun": info.parent_run,
                "pid": info.pid,
                "argv": _argv(info),
                "exe": proc.get("exe"),
                "cwd": proc.get("cwd"),
                "user": proc.get("user"),
                "python": str(proc.get("python") or "").split(" ")[0],
                "fork": bool(proc.get("fork")),
                "installed": info.installed,
                "started": info.started,
                "start": _rel(
                    report, info.start_ts if info.start_ts is not None else info.first_ts
                ),
                "end": _rel(report, info.exit_ts if info.exit_ts is not None else info.last_ts),
                "exit": d.status_text(info.exit) if info.exit is not None else None,
                "replaced": info.run in replaced,
                "missing": info.exit is None and info.run not in replaced,
                "records": info.records,
                "events": info.events,
                "alerts": info.alerts,
                "dropped": info.dropped,
                "cats": {str(k): v for k, v in info.categories.items()},
            }
        )
    return out


def timeline_data(report: Report) -> dict[str, Any]:
    span = report.timeline.span()
    if span is None:
        return {"start": None, "width": 0, "ncols": 0, "rows": {}, "byRun": {}}
    start, end = span
    ncols = max(1, min(COLUMNS, (end - start) >> report.timeline.shift))
    width = (end - start) / ncols
    rows = report.timeline.columns(start, width, ncols)
    by_run: dict[str, dict[str, list[list[int]]]] = {}
    budget = 200_000  # sparse cells across all per-process timelines
    for info in sorted(report.runs.values(), key=lambda r: -r.events):
        if info.timeline is None or not info.timeline.counts or budget <= 0:
            continue
        sparse = {
            str(cat): [[col, n] for col, n in enumerate(counts) if n]
            for cat, counts in info.timeline.columns(start, width, ncols).items()
        }
        budget -= sum(len(v) for v in sparse.values())
        by_run[str(info.index)] = sparse
    return {
        "start": _rel(report, start),
        "width": width,
        "ncols": ncols,
        "rows": {str(k): v for k, v in rows.items()},
        "byRun": by_run,
    }


def events_table(report: Report) -> dict[str, Any]:
    per_name: dict[int, dict[str, int]] = {}
    for (ni, run), n in report.name_runs.items():
        per_name.setdefault(ni, {})[str(run)] = n
    order = sorted(range(len(report.name_list)), key=lambda i: -report.name_counts[i])
    rows = [
        [
            report.name_list[i],
            CATEGORIES[report.name_cats[i]],
            report.name_counts[i],
            per_name.get(i, {}),
            [i],
        ]
        for i in order
    ]
    columns = [_column("event", "mono"), _column("category"), _column("count", "count")]
    return _table("events", "Events by name", columns, rows, len(rows))


def _sorted_rows(table: Any, key: Any, limit: int) -> list[Any]:
    items = list(table.rows.items())
    items.sort(key=key)
    return items[:limit]


def files_tables(report: Report, limit: int) -> list[dict[str, Any]]:
    def first(item: Any) -> Any:
        return item[1][4] or 0

    written = [(k, v) for k, v in report.files.rows.items() if v[1]]
    read = [(k, v) for k, v in report.files.rows.items() if not v[1]]
    written.sort(key=first)
    read.sort(key=first)

    def row(path: str, v: list) -> list:
        ops = ", ".join(sorted(report.name_list[i] for i in v[2]))
        return [path, v[0], v[1], ops, _rel(report, v[4]), sorted(v[3]), sorted(v[2])]

    columns = [
        _column("path", "mono"),
        _column("reads", "num"),
        _column("writes", "num"),
        _column("operations", "mono"),
        _column("first", "time"),
    ]
    note = _overflow_note(report.files.overflow)
    return [
        _table(
            "written",
            "Files written or changed",
            columns,
            [row(k, v) for k, v in written[:limit]],
            len(written),
            note=note,
        ),
        _table(
            "read",
            "Files read",
            columns,
            [row(k, v) for k, v in read[:limit]],
            len(read),
            note=note,
        ),
    ]


def _overflow_note(overflow: int) -> str:
    if not overflow:
        return ""
    return f"{overflow} more operations on names beyond the first distinct ones are not listed"


def spawned_table(report: Report) -> dict[str, Any]:
    children: dict[str, list[RunInfo]] = {}
    for info in report.runs.values():
        if info.parent_run:
            children.setdefault(info.parent_run, []).append(info)
    by_index = list(report.runs.values())
    used: set = set()
    rows = []
    for ts, run, ni, command, where in report.spawned:
        parent = by_index[run] if run < len(by_index) else None
        child = None
        for c in children.get(parent.run if parent else "", []):
            if c.index not in used and " ".join(_argv(c)) == command:
                child = c.index
                used.add(c.index)
                break
        runs = [run] if child is None else [run, child]
        rows.append(
            [_rel(report, ts), run, report.name_list[ni], command, child, where, runs, [ni]]
        )
    columns = [
        _column("time", "time"),
        _column("process", "run"),
        _column("event", "mono"),
        _column("command", "mono"),
        _column("child", "run"),
        _column("where", "mono"),
    ]
    return _table("spawned", "Processes spawned", columns, rows, report.spawned_total)


def peers_table(report: Report, limit: int) -> dict[str, Any]:
    items = _sorted_rows(report.peers, lambda item: item[1][2] or 0, limit)
    rows = [
        [role, peer, v[0], _rel(report, v[2]), sorted(v[1]), sorted(v[3])]
        for (role, peer), v in items
    ]
    columns = [
        _column("role"),
        _column("peer", "mono"),
        _column("count", "num"),
        _column("first", "time"),
    ]
    return _table(
        "network",
        "Network peers",
        columns,
        rows,
        len(report.peers.rows),
        note=_overflow_note(report.peers.overflow),
    )


def imports_table(report: Report, limit: int) -> dict[str, Any]:
    items = _sorted_rows(report.imports, lambda item: item[1][2] or 0, limit)
    ni = [report.names["import"]] if "import" in report.names else []
    rows = [[module, v[0], _rel(report, v[2]), sorted(v[1]), ni] for module, v in items]
    columns = [_column("module", "mono"), _column("count", "num"), _column("first", "time")]
    return _table(
        "imports",
        "Imports",
        columns,
        rows,
        len(report.imports.rows),
        note=_overflow_note(report.imports.overflow),
    )


def _dynamic(file: str) -> bool:
    return file.startswith("<") or not file


def code_table(report: Report, limit: int) -> dict[str, Any]:
    # Code that did not come from a file on disk first: that is what needs reading.
    items = _sorted_rows(
        report.code,
        lambda item: (not _dynamic(item[1][5]) and item[1][3] == "exec", item[1][2] or 0),
        limit,
    )
    rows = []
    for _key, v in items:
        count, runs, ts, how, name, file, sha, source, first = v
        origin = "dynamic" if _dynamic(file) else "file"
        if how != "exec":
            origin = "command line" if how == "cpython.run_command" else "entry point"
        ni = report.names.get(how)
        rows.append(
            [
                _rel(report, ts),
                how,
                origin,
                name,
                file,
                sha,
                count,
                source or "",
                d.where_text(first),
                sorted(runs),
                [ni] if ni is not None else [],
            ]
        )
    columns = [
        _column("first", "time"),
        _column("how", "mono"),
        _column("origin"),
        _column("code object", "mono"),
        _column("file", "mono"),
        _column("sha256", "hash"),
        _column("count", "num"),
        _column("source", "code"),
        _column("called from", "mono"),
    ]
    return _table(
        "code",
        "Code executed",
        columns,
        rows,
        len(report.code.rows),
        note=_overflow_note(report.code.overflow),
    )


def indicators_table(report: Report) -> dict[str, Any]:
    rows = [
        [_rel(report, ts), run, report.name_list[ni], action, args, where, [run], [ni]]
        for ts, run, ni, action, args, where in report.indicators
    ]
    columns = [
        _column("time", "time"),
        _column("process", "run"),
        _column("event", "mono"),
        _column("action"),
        _column("arguments", "mono"),
        _column("where", "mono"),
    ]
    return _table(
        "indicators",
        "Indicators and denials (flushed before the operation went on)",
        columns,
        rows,
        report.indicators_total,
    )


def alerts_data(report: Report) -> list[dict[str, Any]]:
    for alert in report.alerts:
        alert.pop("_wanted", None)  # the run ended before all the context arrived
        alert["ts"] = _rel(report, alert["ts"])
        for row in alert["context"]:
            row[1] = _rel(report, row[1])
    return report.alerts


def page_data(
    report: Report,
    source: str,
    command: list[str] | None = None,
    exit_code: Any = None,
    rejected: int = 0,
) -> dict[str, Any]:
    limit = report.max_rows
    tables = [
        *files_tables(report, limit),
        spawned_table(report),
        peers_table(report, limit),
        imports_table(report, limit),
        code_table(report, limit),
        indicators_table(report),
        events_table(report),
    ]
    return {
        "meta": {
            "source": source,
            "name": os.path.basename(os.path.dirname(source)),
            "command": [str(a) for a in command] if isinstance(command, list) else None,
            "exitCode": exit_code,
            "records": report.records,
            "kinds": {str(k): v for k, v in report.kinds.items()},
            "firstMs": report.first_ts // 1_000_000 if report.first_ts is not None else None,
            "span": _rel(report, report.last_ts),
            "dropped": report.dropped,
            "rejected": rejected,
            "processes": len(report.runs),
            "processesShown": min(len(report.runs), RUNS_MAX),
            "rowsPerTable": limit,
        },
        "categories": list(CATEGORIES),
        "events": [
            [name, report.name_cats[i], report.name_counts[i]]
            for i, name in enumerate(report.name_list)
        ],
        "runs": runs_data(report),
        "timeline": timeline_data(report),
        "alerts": alerts_data(report),
        "alertsTotal": report.alerts_total,
        "alertRules": [
            [rule, report.alert_priority.get(rule, ""), n]
            for rule, n in report.alerts_by_rule.most_common()
        ],
        "tables": tables,
    }
