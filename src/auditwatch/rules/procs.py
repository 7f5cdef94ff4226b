"""What rules know about each process run: its start record, and its parent's.

Start records come first for each run; ``parent_run`` links a run to the run that
started it, so ``proc.parent.*`` is the parent's start record. The table is bounded
(least recently started runs go first): a long-lived collector sees unbounded runs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from auditwatch.rules.values import decode

PROC_FIELDS = ("argv", "exe", "user", "uid", "gid", "cwd", "pid", "ppid", "host")


class ProcInfo:
    __slots__ = ("argv", "cwd", "exe", "gid", "host", "parent", "pid", "ppid", "uid", "user")

    def __init__(self, record: dict[str, Any], parent: ProcInfo | None) -> None:
        proc = record.get("proc") or {}
        self.argv = decode(proc.get("argv"))
        self.exe = decode(proc.get("exe"))
        self.cwd = decode(proc.get("cwd"))
        self.user = decode(proc.get("user"))
        self.uid = proc.get("uid")
        self.gid = proc.get("gid")
        self.ppid = proc.get("ppid")
        self.host = proc.get("host")
        self.pid = record.get("pid")
        self.parent = parent


class ProcTable:
    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._runs: OrderedDict[str, ProcInfo] = OrderedDict()

    def start(self, record: dict[str, Any]) -> ProcInfo:
        parent_run = record.get("parent_run")
        parent = self._runs.get(parent_run) if parent_run else None
        info = ProcInfo(record, parent)
        self._runs[record.get("run", "")] = info
        if len(self._runs) > self.capacity:
            self._runs.popitem(last=False)
        return info

    def get(self, run: str | None) -> ProcInfo | None:
        return self._runs.get(run) if run else None

    def __len__(self) -> int:
        return len(self._runs)
