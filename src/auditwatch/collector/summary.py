"""What a run did, in a few lines: the end-of-run summary of ``auditwatch run``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from auditwatch.catalog import category
from auditwatch.records import arg, plain, text

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
LIST_CAP = 10_000  # per table: a summary is not the record


@dataclass
class RunInfo:
    run: str
    pid: int
    parent_run: str | None
    installed: str
    argv: list[str] = field(default_factory=list)
    exe: str | None = None
    exit: dict | None = None
    events: int = 0
    last_event: str | None = None
    started: bool = False


def _is_write(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _address(value: Any) -> str:
    v = plain(value)
    if isinstance(v, list) and len(v) >= 2:
        return f"{text(v[0]) or v[0]}:{v[1]}"
    t = text(v)
    return t if t is not None else str(v)


def _command(event: str, record: dict) -> str:
    if event == "os.system":
        return text(arg(record, 0)) or "?"
    if event == "subprocess.Popen":
        argv = plain(arg(record, 1))
        if isinstance(argv, list):
            return " ".join(text(a) or "?" for a in argv)
        return text(argv) or text(arg(record, 0)) or "?"
    index = {"os.spawn": 2, "os.posix_spawn": 1, "os.exec": 1}.get(event, 1)
    argv = plain(arg(record, index))
    if isinstance(argv, list):
        return " ".join(text(a) or "?" for a in argv)
    return text(arg(record, 0)) or "?"


def _inside_subprocess(record: dict) -> bool:
    # Since 3.13 subprocess may start children with os.posix_spawn: that event is
    # the same spawn as the subprocess.Popen event before it.
    where = record.get("where") or {}
    return record.get("event") != "subprocess.Popen" and str(where.get("file", "")).endswith(
        "subprocess.py"
    )


SPAWN_EVENTS = {
    "subprocess.Popen",
    "os.system",
    "os.posix_spawn",
    "os.exec",
    "os.spawn",
    "pty.spawn",
}
CONNECT_EVENTS = {"socket.connect", "socket.sendto"}


class Summary:
    """Aggregates records as they arrive (a RecordSink)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunInfo] = {}
        self.events: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()
        self.files_written: Counter[str] = Counter()
        self.spawned: list[dict] = []
        self.connected: Counter[str] = Counter()
        self.listening: Counter[str] = Counter()
        self.denied: list[dict] = []
        self.dropped = 0
        self.rejected: Counter[str] = Counter()
        self.records = 0

    def accept(self, raw: bytes, record: dict, peer: object) -> None:
        self.records += 1
        run_id = record["run"]
        info = self.runs.get(run_id)
        if info is None:
            info = self.runs[run_id] = RunInfo(
                run_id, record["pid"], record.get("parent_run"), record.get("installed", "?")
            )
        kind = record.get("kind")
        if kind == "event":
            self._event(info, record)
        elif kind == "start":
            proc = record.get("proc") or {}
            info.started = True
            info.argv = [a for a in proc.get("argv") or [] if isinstance(a, str)]
            info.exe = proc.get("exe")
        elif kind == "exit":
            info.exit = record.get("status") or {}
        elif kind == "drop":
            self.dropped += int(record.get("dropped") or 0)

    def reject(self, reason: str) -> None:
        self.rejected[reason.split(":")[0]] += 1

    def _event(self, info: RunInfo, record: dict) -> None:
        event = record.get("event") or "?"
        info.events += 1
        info.last_event = event
        self.events[event] += 1
        self.categories[category(event)] += 1
        if record.get("action") == "deny":
            self.denied.append({"run": info.run, "event": event, "rule": record.get("rule")})
        if event == "open" and _is_write(plain(arg(record, 1)), plain(arg(record, 2))):
            # open() of an int wraps a descriptor that is already open (stdout at
            # start-up): no file is opened, so it is not listed.
            key = text(arg(record, 0))
            if key is not None and (
                key in self.files_written or len(self.files_written) < LIST_CAP
            ):
                self.files_written[key] += 1
        elif (
            event in SPAWN_EVENTS
            and len(self.spawned) < LIST_CAP
            and not _inside_subprocess(record)
        ):
            self.spawned.append(
                {"run": info.run, "event": event, "command": _command(event, record)}
            )
        elif event in CONNECT_EVENTS:
            self.connected[_address(arg(record, 1))] += 1
        elif event == "socket.bind":
            self.listening[_address(arg(record, 1))] += 1

    # -- results -------------------------------------------------------------------

    def exec_replaced(self) -> set[str]:
        """Runs whose image was replaced by exec: a child run with the same pid follows."""
        by_parent = {(r.parent_run, r.pid) for r in self.runs.values()}
        return {
            r.run
            for r in self.runs.values()
            if r.exit is None and r.last_event == "os.exec" and (r.run, r.pid) in by_parent
        }

    def missing_exit(self) -> list[RunInfo]:
        replaced = self.exec_replaced()
        return [r for r in self.runs.values() if r.exit is None and r.run not in replaced]

    def as_dict(self, command: list[str], exit_code: int, still_running: int = 0) -> dict:
        def run_dict(r: RunInfo) -> dict:
            return {
                "run": r.run,
                "pid": r.pid,
                "parent_run": r.parent_run,
                "installed": r.installed,
                "argv": r.argv,
                "events": r.events,
                "exit": r.exit,
            }

        return {
            "command": command,
            "exit_code": exit_code,
            "records": self.records,
            "processes": [run_dict(r) for r in self.runs.values()],
            "events_by_category": dict(self.categories.most_common()),
            "top_events": dict(self.events.most_common(15)),
            "files_written": sorted(self.files_written),
            "spawned": self.spawned,
            "network": {"connected": dict(self.connected), "bound": dict(self.listening)},
            "denied": self.denied,
            "dropped": self.dropped,
            "missing_exit": [r.run for r in self.missing_exit()],
            "exec_replaced": sorted(self.exec_replaced()),
            "still_running": still_running,
            "rejected": dict(self.rejected),
        }
