"""The alert engine: a collector RecordSink that runs a ruleset over records.

Per record: one dict lookup finds the rules filed under its event name (plus the
catch-all rules), then each rule is one compiled predicate call. Start records
feed the process table behind ``proc.*``; exit records end a run's sequence state.

Alerts are rate-limited per rule with a token bucket on record time (``burst``
alerts at once, then ``rate`` per second); suppressed alerts are counted and
reported in summary alerts (``suppressed: N``) every ``summary_every`` seconds of
record time and at ``close()``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Callable, Dict, Optional, Tuple

from auditwatch.rules.operators import text_union
from auditwatch.rules.procs import ProcInfo, ProcTable
from auditwatch.rules.ruleset import Rule, Ruleset

Alert = Dict[str, Any]
Emit = Callable[[Alert], None]
ChainStart = Tuple[int, int, Optional[str]]  # seq, ts, event of a sequence's first step
# A rule that fired: the rule, the record, its process, a sequence's start, a count.
Fired = Tuple[Rule, dict, Optional[ProcInfo], Optional[ChainStart], Optional[int]]


class AlertEngine:
    def __init__(
        self,
        ruleset: Ruleset,
        emit: Emit,
        *,
        rate: float = 1.0,
        burst: int = 20,
        summary_every: float = 60.0,
        max_runs: int = 20_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ruleset = ruleset
        self.emit = emit
        self.rate = rate
        self.burst = burst
        self.summary_every_ns = int(summary_every * 1e9)
        self.clock = clock
        self.procs = ProcTable(max_runs)
        by_event, catch_all = ruleset.index()
        self.by_event = {name: _plan(rules) for name, rules in by_event.items()}
        self.catch_all = _plan(catch_all)
        self.max_runs = max_runs
        # run -> rule position -> per step k: the chain waiting for step k (None: none)
        self._chains: OrderedDict[str, dict[int, list[ChainStart | None]]] = OrderedDict()
        # run -> rule position -> recent matches (seq, ts), for count rules
        self._counts: OrderedDict[str, dict[int, deque]] = OrderedDict()
        self._buckets: dict[str, list[float]] = {}
        self._suppressed: dict[str, int] = {}
        self._last_summary: int | None = None
        self.alerts = 0
        self.suppressed_total = 0
        self.counts: dict[str, int] = {}
        self._fired: list[Fired] = []  # this record's alerts, until sorted

    # -- RecordSink ------------------------------------------------------------------

    def accept(self, raw: bytes, record: dict, peer: Any) -> None:
        self.process(record)

    def wants_event(self, name: str) -> bool:
        """Whether an event record of this name can raise an alert: the collector
        does not parse the others of a span (start and exit records, which feed the
        process table, are never in one)."""
        return name in self.by_event or bool(self.catch_all)

    def process(self, record: dict) -> None:
        if record.get("kind") != "event":
            kind = record.get("kind")
            if kind == "start":
                self.procs.start(record)
            elif kind == "exit":
                self._chains.pop(record.get("run", ""), None)
                self._counts.pop(record.get("run", ""), None)
            return
        rules = self.by_event.get(record.get("event"), self.catch_all)  # type: ignore[arg-type]
        if not rules:
            return
        self._run(rules, record, self.procs.get(record.get("run")))
        if self._fired:
            # Grouped rules (see _plan) run out of definition order; their alerts
            # go out in it.
            fired, self._fired = self._fired, []
            fired.sort(key=lambda f: f[0].position)
            for one in fired:
                self._alert(one)

    def _run(self, rules: list[Any], record: dict, proc: ProcInfo | None) -> None:
        for rule in rules:
            if type(rule) is _Guard:
                value = rule.get(record, proc)
                if value is None or (type(value) is str and not rule.test(value)):
                    continue
                self._run(rule.rules, record, proc)
                continue
            match = rule.match
            if match is not None:
                if match(record, proc) and (
                    rule.exception is None or not rule.exception(record, proc)
                ):
                    if rule.count is None:
                        self._fire(rule, record, proc, None)
                    else:
                        self._threshold(rule, record, proc)
            else:
                self._step(rule, record, proc)

    def close(self) -> None:
        """Report what the rate limit suppressed and has not been reported yet."""
        self._summaries(self.clock())

    def tick(self, now_ns: int | None = None) -> None:
        """Periodic call (from the collector's loop): summaries when they are due."""
        now = self.clock() if now_ns is None else now_ns
        if self._suppressed and self._due(now):
            self._summaries(now)

    # -- counts and sequences --------------------------------------------------------

    def _threshold(self, rule: Rule, record: dict, proc: ProcInfo | None) -> None:
        run = record.get("run", "")
        per_run = self._counts.get(run)
        if per_run is None:
            per_run = self._counts[run] = {}
            if len(self._counts) > self.max_runs:
                self._counts.popitem(last=False)
        recent = per_run.get(rule.position)
        if recent is None:
            recent = per_run[rule.position] = deque()
        seq, ts = record.get("seq", 0), record.get("ts", 0)
        while recent and not self._within(rule, (recent[0][0], recent[0][1], None), seq, ts):
            recent.popleft()
        recent.append((seq, ts))
        if len(recent) >= rule.count:  # type: ignore[operator]
            first = recent[0]
            recent.clear()
            self._fire(rule, record, proc, (first[0], first[1], record.get("event")), rule.count)

    def _step(self, rule: Rule, record: dict, proc: ProcInfo | None) -> None:
        run = record.get("run", "")
        chains = self._chains.get(run)
        progress = chains.get(rule.position) if chains is not None else None
        steps = rule.steps
        last = len(steps) - 1
        seq, ts = record.get("seq", 0), record.get("ts", 0)
        # Last step first, so one record never advances a chain by two steps.
        for k in range(last, -1, -1):
            if k > 0 and (progress is None or progress[k] is None):
                continue
            if not steps[k](record, proc):
                continue
            if k == 0:
                if progress is None:
                    progress = self._progress(run, rule)
                if last > 0:
                    progress[1] = (seq, ts, record.get("event"))
                continue
            start = progress[k]  # type: ignore[index]
            assert start is not None and progress is not None
            if not self._within(rule, start, seq, ts):
                progress[k] = None
                continue
            if k == last:
                for i in range(len(progress)):
                    progress[i] = None
                if rule.exception is None or not rule.exception(record, proc):
                    self._fire(rule, record, proc, start)
                return
            newer = progress[k + 1]
            if newer is None or newer[0] < start[0]:
                progress[k + 1] = start

    def _progress(self, run: str, rule: Rule) -> list[ChainStart | None]:
        chains = self._chains.get(run)
        if chains is None:
            chains = self._chains[run] = {}
            if len(self._chains) > self.max_runs:
                self._chains.popitem(last=False)
        progress: list[ChainStart | None] = [None] * len(rule.steps)
        chains[rule.position] = progress
        return progress

    @staticmethod
    def _within(rule: Rule, start: ChainStart, seq: int, ts: int) -> bool:
        if rule.within_events is not None and seq - start[0] > rule.within_events:
            return False
        return not (rule.within_ns is not None and ts - start[1] > rule.within_ns)

    # -- alerts ----------------------------------------------------------------------

    def _fire(
        self,
        rule: Rule,
        record: dict,
        proc: ProcInfo | None,
        start: ChainStart | None,
        count: int | None = None,
    ) -> None:
        self._fired.append((rule, record, proc, start, count))

    def _alert(self, fired: Fired) -> None:
        rule, record, proc, start, count = fired
        ts = record.get("ts") or self.clock()
        if not self._allow(rule.name, ts):
            return
        alert: Alert = {
            "v": 1,
            "kind": "alert",
            "ts": self.clock(),
            "run": record.get("run"),
            "seq": record.get("seq"),
            "parent_run": record.get("parent_run"),
            "pid": record.get("pid"),
            "event": record.get("event"),
            "record_ts": record.get("ts"),
            "rule": rule.name,
            "priority": rule.priority,
            "tags": list(rule.tags),
            "output": rule.output(record, proc),
            "action": rule.action,
        }
        if rule.action == "deny":
            alert["mode"] = rule.mode
            alert["denied"] = record.get("action") == "deny"
        if count is not None:
            alert["count"] = count
        if start is not None:
            alert["first"] = {"seq": start[0], "ts": start[1], "event": start[2]}
        self.alerts += 1
        self.counts[rule.name] = self.counts.get(rule.name, 0) + 1
        self.emit(alert)
        if self._suppressed and self._due(ts):
            self._summaries(ts)

    def _allow(self, name: str, now: int) -> bool:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = [float(self.burst), now]
        elapsed = (now - bucket[1]) / 1e9
        if elapsed > 0:
            bucket[0] = min(float(self.burst), bucket[0] + elapsed * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        self._suppressed[name] = self._suppressed.get(name, 0) + 1
        self.suppressed_total += 1
        if self._last_summary is None:
            self._last_summary = now
        return False

    def _due(self, now: int) -> bool:
        return self._last_summary is None or now - self._last_summary >= self.summary_every_ns

    def _summaries(self, now: int) -> None:
        self._last_summary = now
        pending, self._suppressed = self._suppressed, {}
        for name, count in pending.items():
            rule = self.ruleset.get(name)
            self.emit(
                {
                    "v": 1,
                    "kind": "alert",
                    "ts": self.clock(),
                    "run": None,
                    "seq": None,
                    "pid": None,
                    "event": None,
                    "rule": name,
                    "priority": rule.priority if rule else "notice",
                    "tags": list(rule.tags) if rule else [],
                    "suppressed": count,
                    "output": f"{count} more alerts of rule {name!r} suppressed by the rate limit",
                    "action": rule.action if rule else "alert",
                }
            )


class _Guard:
    """Rules that each need a text test on one field: the field is read once, and the
    union of their tests rules the whole group out for most records."""

    __slots__ = ("get", "parts", "rules", "test")

    def __init__(self, get: Callable[[dict, Any], Any]) -> None:
        self.get = get
        self.rules: list[Rule] = []
        self.parts: list[tuple[str, tuple[Any, ...]]] = []
        self.test: Callable[[str], bool] = bool


def _plan(rules: list[Rule]) -> list[Any]:
    plan: list[Any] = []
    guards: dict[str, _Guard] = {}
    for rule in rules:
        if rule.guard is None:
            plan.append(rule)
            continue
        name, get, op, values = rule.guard
        guard = guards.get(name)
        if guard is None:
            guard = guards[name] = _Guard(get)
            plan.append(guard)
        guard.rules.append(rule)
        guard.parts.append((op, values))
    for guard in guards.values():
        guard.test = text_union(guard.parts)
    return [g.rules[0] if type(g) is _Guard and len(g.rules) == 1 else g for g in plan]
