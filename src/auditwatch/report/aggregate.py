"""One pass over a run's records, keeping only what the report shows.

Everything here is bounded whatever the number of records: counters, per-category
time buckets, and for each table its rows up to a limit plus a count of the rest.
The result is a plain dict (``Report.data()``) that the page embeds as JSON; table
rows are arrays whose last two entries are the processes (run indexes) and event
names (indexes into ``events``) the row involves, which the page's filters use.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from auditwatch.catalog import CATEGORIES, category
from auditwatch.report import describe as d
from auditwatch.report.timeline import Buckets

ROWS = 5000  # default rows embedded per table; the rest are counted
KEYS_MAX = 200_000  # distinct keys kept per aggregated table (files, imports, ...)
NAMES_MAX = 10_000  # distinct event names; a process can invent any with sys.audit
ALERTS_MAX = 1000  # alerts embedded with their context; the rest counted by rule
RUNS_MAX = 10_000  # processes listed in the tree
RUN_TIMELINES = 500  # processes with a timeline of their own
COLUMNS = 240  # timeline columns
OTHER_NAMES = "(other event names)"
ROW_RUNS = 50  # processes listed per aggregated row (for the process filter)


@dataclass
class RunInfo:
    index: int
    run: str
    parent_run: str | None = None
    pid: Any = None
    installed: Any = None
    proc: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    start_ts: int | None = None
    exit: dict[str, Any] | None = None
    exit_ts: int | None = None
    first_ts: int | None = None
    last_ts: int | None = None
    records: int = 0
    events: int = 0
    alerts: int = 0
    dropped: int = 0
    last_ni: int | None = None  # the last event's name index
    names: dict[int, int] = field(default_factory=dict)  # name index -> events
    categories: Counter = field(default_factory=Counter)  # derived by finish()
    timeline: Buckets | None = None


class KeyedTable:
    """Rows aggregated by a key (a path, a module, a peer, a code hash)."""

    def __init__(self) -> None:
        self.rows: dict[Any, list] = {}
        self.overflow = 0  # events whose key arrived after KEYS_MAX keys

    def get(self, key: Any, make: Any) -> list | None:
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= KEYS_MAX:
                self.overflow += 1
                return None
            row = self.rows[key] = make()
        return row


def _add_run(runs: set, index: int) -> None:
    if len(runs) < ROW_RUNS:
        runs.add(index)


class Report:
    def __init__(self, rows: int = ROWS, context: int = 5) -> None:
        self.max_rows = rows
        self.context = context
        self.runs: dict[str, RunInfo] = {}
        self.names: dict[str, int] = {}  # event name -> index into name_list
        self.name_list: list[str] = []
        self.name_cats: list[int] = []
        self.name_counts: list[int] = []  # derived by finish()
        self.handlers: list[Any] = []
        self.name_runs: Counter = Counter()  # (name index, run index) -> events
        self.timeline = Buckets(16_384)
        self.records = 0
        self.kinds: dict[Any, int] = {}
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.dropped = 0
        self.files = KeyedTable()  # path -> [reads, writes, ops, runs, first_ts]
        self.imports = KeyedTable()  # module -> [count, runs, first_ts, names]
        self.peers = KeyedTable()  # (role, peer) -> [count, runs, first_ts, names]
        self.code = KeyedTable()  # hash or text -> [...]
        self.spawned: list[list] = []
        self.spawned_total = 0
        self.indicators: list[list] = []
        self.indicators_total = 0
        self.alerts: list[dict[str, Any]] = []
        self.alerts_total = 0
        self.alerts_by_rule: Counter = Counter()
        self.alert_priority: dict[str, str] = {}
        # Recent records per run, for the context of alerts (which follow the record
        # that triggered them), and alerts still waiting for records after it.
        self.recent: dict[int, deque[dict]] = {}
        self.waiting: dict[int, list[dict[str, Any]]] = {}
        self.last_compile: dict[tuple[int, Any], tuple[str, str | None]] = {}
        self.cat_index = {name: i for i, name in enumerate(CATEGORIES)}

    # -- reading ------------------------------------------------------------------

    def add_all(self, records: Iterable[dict]) -> Report:
        add = self.add
        for record in records:
            add(record)
        return self.finish()

    def add(self, record: dict) -> None:
        # The hot path: a million calls for a million records. Totals that can be
        # derived later (per-name and per-category counts, the overall time span)
        # are derived in finish() instead of being kept here.
        self.records += 1
        kind = record.get("kind")
        kinds = self.kinds
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "alert":
            self._alert(record)
            return
        info = self.runs.get(record.get("run"))  # type: ignore[arg-type]
        if info is None:
            run_id = record.get("run")
            if not isinstance(run_id, str):
                return
            info = self._new_run(run_id, record)
        info.records += 1
        ts = record.get("ts")
        if type(ts) is int:
            if info.first_ts is None or ts < info.first_ts:
                info.first_ts = ts
            if info.last_ts is None or ts > info.last_ts:
                info.last_ts = ts
        else:
            ts = None
        if kind == "event":
            self._event(info, record, ts)
        elif kind == "start":
            proc = record.get("proc")
            info.proc = proc if isinstance(proc, dict) else {}
            info.started = True
            info.start_ts = ts
        elif kind == "exit":
            status = record.get("status")
            info.exit = status if isinstance(status, dict) else {"how": "?"}
            info.exit_ts = ts
        elif kind == "drop":
            n = record.get("dropped")
            if isinstance(n, int):
                info.dropped += n
                self.dropped += n
        elif kind == "heartbeat":
            return
        if type(record.get("seq")) is not int:
            return
        self.recent[info.index].append(record)
        if self.waiting:
            waiting = self.waiting.get(info.index)
            if waiting:
                self._continue_context(info.index, record, waiting)

    def finish(self) -> Report:
        """Derive the totals add() leaves out; call once after the last record."""
        self.name_counts = [0] * len(self.name_list)
        for info in self.runs.values():
            for ni, n in info.names.items():
                self.name_counts[ni] += n
                self.name_runs[ni, info.index] = n
                info.categories[self.name_cats[ni]] += n
            if info.first_ts is not None:
                if self.first_ts is None or info.first_ts < self.first_ts:
                    self.first_ts = info.first_ts
                if self.last_ts is None or info.last_ts > self.last_ts:  # type: ignore[operator]
                    self.last_ts = info.last_ts
        return self

    def _new_run(self, run_id: str, record: dict) -> RunInfo:
        parent = record.get("parent_run")
        info = RunInfo(
            index=len(self.runs),
            run=run_id,
            parent_run=parent if isinstance(parent, str) else None,
            pid=record.get("pid"),
            installed=record.get("installed"),
        )
        if info.index < RUN_TIMELINES:
            info.timeline = Buckets(2048)
        self.runs[run_id] = info
        self.recent[info.index] = deque(maxlen=max(32, 2 * self.context + 8))
        return info

    def _name(self, name: str) -> int:
        index = self.names.get(name)
        if index is None:
            if len(self.name_list) >= NAMES_MAX:
                name = OTHER_NAMES
                index = self.names.get(name)
            if index is None:
                index = self.names[name] = len(self.name_list)
                self.name_list.append(name)
                cat = self.cat_index.get(category(name), len(CATEGORIES) - 1)
                self.name_cats.append(cat)
                self.handlers.append(self._handler(name, CATEGORIES[cat]))
        return index

    def _handler(self, name: str, cat: str) -> Any:
        """The table an event name feeds, decided once per name."""
        if name == "import":
            return self._import
        if name == "compile":
            return self._compile
        if name == "exec":
            return self._exec
        if name in d.RUN_EVENTS:
            return self._run_code
        if name in d.SPAWN_EVENTS:
            return self._spawn
        if cat == "network":
            return self._peer
        if cat == "file" and not name.startswith(("fcntl.", "msvcrt.")):
            return self._file  # not fcntl: operations on descriptors, no path to list
        return None

    def _event(self, info: RunInfo, record: dict, ts: int | None) -> None:
        event = record.get("event")
        ni = self.names.get(event)  # type: ignore[arg-type]
        if ni is None:
            ni = self._name(event if isinstance(event, str) else "?")
        names = info.names
        names[ni] = names.get(ni, 0) + 1
        info.events += 1
        info.last_ni = ni
        if ts is not None:
            cat = self.name_cats[ni]
            self.timeline.add(ts, cat)
            if info.timeline is not None:
                info.timeline.add(ts, cat)
        action = record.get("action")
        if action == "flush" or action == "deny":
            self._indicator(info, record, ni, ts)
        handler = self.handlers[ni]
        if handler is not None:
            handler(info, record, ni, ts)

    # -- tables -------------------------------------------------------------------

    def _file(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        path = d.path_of(record)
        if path is None:
            return
        row = self.files.get(path, lambda: [0, 0, set(), set(), ts])
        if row is None:
            return
        event = self.name_list[ni]
        written = d.opened_for_writing(record) if event == "open" else event in d.CHANGE_EVENTS
        row[1 if written else 0] += 1
        row[2].add(ni)
        _add_run(row[3], info.index)

    def _import(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        module = d.value_text(d.arg(record, 0))
        row = self.imports.get(module, lambda: [0, set(), ts])
        if row is not None:
            row[0] += 1
            _add_run(row[1], info.index)

    def _compile(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        # Kept until the exec of the code object it made, which names the same file.
        self.last_compile[info.index, record.get("tid")] = (
            d.value_text(d.arg(record, 1)),
            d.source_text(d.arg(record, 0)),
        )

    def _peer(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        peer = d.network_peer(self.name_list[ni], record)
        if peer is None:
            return
        row = self.peers.get(peer, lambda: [0, set(), ts, set()])
        if row is not None:
            row[0] += 1
            _add_run(row[1], info.index)
            row[3].add(ni)

    def _exec(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        code = d.code_object(record)
        compiled = self.last_compile.pop((info.index, record.get("tid")), None)
        if code is None:
            name, file, sha = "?", d.args_text(record), ""
        else:
            name, file = str(code.get("name")), str(code.get("file"))
            sha = str(code.get("sha256") or "")
        source = compiled[1] if compiled is not None and compiled[0] == file else None
        # The hash covers the bytecode, not the constants: print('a') and print('b')
        # share it. The source keeps them apart when it was recorded.
        key = (sha, name, file, source)
        row = self.code.get(key, lambda: [0, set(), ts, "exec", name, file, sha, source, record])
        if row is not None:
            row[0] += 1
            _add_run(row[1], info.index)

    def _run_code(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        event = self.name_list[ni]
        what = d.value_text(d.arg(record, 0))
        source = d.source_text(d.arg(record, 0)) if event == "cpython.run_command" else None
        row = self.code.get(
            (event, what), lambda: [0, set(), ts, event, "", what, "", source, record]
        )
        if row is not None:
            row[0] += 1
            _add_run(row[1], info.index)

    def _spawn(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        self.spawned_total += 1
        if len(self.spawned) < self.max_rows:
            command = d.command_of(self.name_list[ni], record)
            self.spawned.append([ts, info.index, ni, command, d.where_text(record)])

    def _indicator(self, info: RunInfo, record: dict, ni: int, ts: int | None) -> None:
        self.indicators_total += 1
        if len(self.indicators) < self.max_rows:
            action = str(record.get("action"))
            if record.get("rule"):
                action += f" ({record.get('rule')})"
            self.indicators.append(
                [ts, info.index, ni, action, d.args_text(record), d.where_text(record)]
            )

    # -- alerts -------------------------------------------------------------------

    def _alert(self, record: dict) -> None:
        self.alerts_total += 1
        rule = str(record.get("rule") or record.get("name") or "alert")
        self.alerts_by_rule[rule] += 1
        self.alert_priority.setdefault(rule, str(record.get("priority") or ""))
        info = self.runs.get(record.get("run")) if isinstance(record.get("run"), str) else None
        if info is not None:
            info.alerts += 1
        if len(self.alerts) >= ALERTS_MAX:
            return
        seq = record.get("seq")
        alert: dict[str, Any] = {
            "ts": record.get("record_ts") if isinstance(record.get("record_ts"), int) else None,
            "rule": rule,
            "priority": str(record.get("priority") or ""),
            "tags": [str(t) for t in record.get("tags") or [] if isinstance(t, str)][:20],
            "output": d.clip(str(record.get("output") or ""), 2000),
            "event": str(record.get("event") or ""),
            "run": info.index if info is not None else None,
            "seq": seq if isinstance(seq, int) else None,
            "action": str(record.get("action") or "alert"),
            "extra": self._alert_extra(record),
            "context": [],
        }
        if alert["ts"] is None and isinstance(record.get("ts"), int):
            alert["ts"] = record["ts"]
        self.alerts.append(alert)
        if info is None or alert["seq"] is None:
            return
        after = 0
        before = [r for r in self.recent[info.index] if r.get("seq", 0) < seq]
        for r in before[-self.context :]:
            alert["context"].append(self._context_row(r, False))
        for r in self.recent[info.index]:
            s = r.get("seq", 0)
            if s == seq:
                alert["context"].append(self._context_row(r, True))
            elif s > seq and after < self.context:
                alert["context"].append(self._context_row(r, False))
                after += 1
        if after < self.context:
            alert["_wanted"] = self.context - after
            self.waiting.setdefault(info.index, []).append(alert)

    @staticmethod
    def _alert_extra(record: dict) -> str:
        parts = []
        for key in ("mode", "denied", "count", "suppressed"):
            if key in record:
                parts.append(f"{key} {record[key]}")
        first = record.get("first")
        if isinstance(first, dict):
            parts.append(f"first: seq {first.get('seq')} {first.get('event')}")
        return ", ".join(parts)

    def _context_row(self, record: dict, trigger: bool) -> list:
        kind = record.get("kind")
        name = record.get("event") if kind == "event" else f"({kind})"
        return [record.get("seq"), record.get("ts"), str(name), d.record_text(record), trigger]

    def _continue_context(self, run: int, record: dict, waiting: list[dict[str, Any]]) -> None:
        seq = record.get("seq", 0)
        for alert in list(waiting):
            if seq > alert["seq"]:
                alert["context"].append(self._context_row(record, False))
                alert["_wanted"] -= 1
                if alert["_wanted"] <= 0:
                    waiting.remove(alert)
                    del alert["_wanted"]
        if not waiting:
            del self.waiting[run]
