"""Rule test cases in YAML: records in, expected alerts out.

A test file is a list of cases. A case either targets one rule:

    - rule: Shadow password file read
      fires:                      # each item: a record, or a list of records (one run)
        - {event: open, args: [/etc/shadow, r, 524288]}
      quiet:                      # the rule must not fire on any of these
        - {event: open, args: [/etc/passwd, r, 524288]}

or states every alert a stream of records gives, by rule name, in order:

    - name: the bundled example
      records: [{event: open, args: [...]}, ...]
      expect: [Code compiled from a string]

Records need only what the case is about: ``v``, ``kind: event``, ``run``, ``seq``
(counting), ``ts`` (1 ms apart), ``pid`` and a ``where`` are filled in, and each
stream starts with a start record (``proc`` from the case or a default process)
unless it has its own. ``proc:`` in a case sets the process; ``parent:`` adds a
parent run with that process. ``repeat: N`` in a record stands for N copies of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from auditwatch.rules.engine import AlertEngine
from auditwatch.rules.ruleset import Ruleset

DEFAULT_TESTS = Path(__file__).with_name("default_rules_tests.yaml")
CASE_KEYS = ("rule", "name", "fires", "quiet", "records", "expect", "proc", "parent")
DEFAULT_PROC = {
    "exe": "/usr/bin/python3.12",
    "argv": ["python3", "app.py"],
    "cwd": "/home/user/project",
    "uid": 1000,
    "gid": 1000,
    "user": "user",
    "ppid": 1,
    "host": "test",
}
DEFAULT_WHERE = {"file": "/home/user/project/app.py", "line": 10, "func": "main"}
RUN, PARENT_RUN = "a" * 32, "b" * 32
T0 = 1_700_000_000_000_000_000


@dataclass
class Failure:
    case: str
    message: str

    def __str__(self) -> str:
        return f"{self.case}: {self.message}"


@dataclass
class Report:
    cases: int = 0
    checks: int = 0
    failures: list[Failure] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)  # rule -> positive checks
    quiet: dict[str, int] = field(default_factory=dict)  # rule -> negative checks

    @property
    def ok(self) -> bool:
        return not self.failures


class CaseError(ValueError):
    """A malformed test file."""


def stream(records: list[dict], proc: dict | None, parent: dict | None) -> list[dict]:
    """Complete the records of one run as the collector would receive them."""
    out: list[dict] = []
    ts = T0
    if parent is not None:
        out.append(_start(PARENT_RUN, None, 4000, parent, ts))
    if not records or records[0].get("kind") != "start":
        out.append(_start(RUN, PARENT_RUN if parent is not None else None, 4242, proc, ts))
    seq = {RUN: 1}
    expanded = []
    for given in records:
        times = given.get("repeat", 1)
        expanded.extend([{k: v for k, v in given.items() if k != "repeat"}] * int(times))
    for given in expanded:
        rec = copy.deepcopy(given)
        ts += 1_000_000
        run = rec.setdefault("run", RUN)
        seq[run] = seq.get(run, 0) + 1
        rec.setdefault("v", 1)
        rec.setdefault("kind", "event")
        rec.setdefault("seq", seq[run])
        rec.setdefault("ts", ts)
        rec.setdefault("pid", 4242)
        rec.setdefault("parent_run", PARENT_RUN if parent is not None else None)
        rec.setdefault("installed", "site")
        if rec["kind"] == "event":
            rec.setdefault("tid", rec["pid"])
            rec.setdefault("interp", 0)
            rec.setdefault("args", [])
            rec.setdefault("where", dict(DEFAULT_WHERE))
            rec.setdefault("action", "record")
        elif rec["kind"] == "start":
            rec.setdefault("proc", dict(DEFAULT_PROC))
        seq[run] = rec["seq"]
        out.append(rec)
    return out


def _start(run: str, parent_run: str | None, pid: int, proc: dict | None, ts: int) -> dict:
    return {
        "v": 1,
        "kind": "start",
        "run": run,
        "parent_run": parent_run,
        "seq": 1,
        "ts": ts,
        "pid": pid,
        "installed": "site",
        "proc": {**DEFAULT_PROC, **(proc or {})},
    }


def alerts_for(ruleset: Ruleset, records: list[dict]) -> list[dict]:
    """Every alert (no rate limit) the records give, in order."""
    found: list[dict] = []
    engine = AlertEngine(ruleset, found.append, burst=1_000_000, rate=1e9)
    for rec in records:
        engine.process(rec)
    engine.close()
    return [a for a in found if "suppressed" not in a]


def load_cases(path: str | Path) -> list[dict]:
    data = yaml.safe_load(Path(path).read_text("utf-8"))
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
        raise CaseError(f"{path}: a test file is a list of cases (mappings)")
    for i, case in enumerate(data):
        unknown = [k for k in case if k not in CASE_KEYS]
        if unknown:
            raise CaseError(f"{path}: case {i + 1}: unknown keys {unknown}; keys: {CASE_KEYS}")
        if "rule" not in case and "expect" not in case:
            raise CaseError(f"{path}: case {i + 1}: needs `rule:` or `expect:`")
    return data


def _streams(items: Iterable[Any]) -> list[list[dict]]:
    out = []
    for item in items or ():
        if isinstance(item, dict):
            out.append([item])
        elif isinstance(item, list) and all(isinstance(r, dict) for r in item):
            out.append(item)
        else:
            raise CaseError(f"a record is a mapping, or a list of them for one run: {item!r}")
    return out


def run_cases(ruleset: Ruleset, cases: list[dict], report: Report | None = None) -> Report:
    report = report or Report()
    known = {r.name for r in ruleset.rules}
    for i, case in enumerate(cases):
        report.cases += 1
        label = case.get("name") or case.get("rule") or f"case {i + 1}"
        proc, parent = case.get("proc"), case.get("parent")
        if "rule" in case:
            name = case["rule"]
            if name not in known:
                report.failures.append(Failure(label, f"no rule named {name!r}"))
                continue
            for n, records in enumerate(_streams(case.get("fires")), 1):
                report.checks += 1
                got = [a["rule"] for a in alerts_for(ruleset, stream(records, proc, parent))]
                if name in got:
                    report.fired[name] = report.fired.get(name, 0) + 1
                else:
                    report.failures.append(Failure(label, f"fires #{n}: did not fire (got {got})"))
            for n, records in enumerate(_streams(case.get("quiet")), 1):
                report.checks += 1
                got = [a["rule"] for a in alerts_for(ruleset, stream(records, proc, parent))]
                if name in got:
                    report.failures.append(Failure(label, f"quiet #{n}: fired"))
                else:
                    report.quiet[name] = report.quiet.get(name, 0) + 1
        if "expect" in case:
            report.checks += 1
            (records,) = _streams([case.get("records") or []])
            got = [a["rule"] for a in alerts_for(ruleset, stream(records, proc, parent))]
            if got != list(case["expect"]):
                report.failures.append(Failure(label, f"expected {case['expect']}, got {got}"))
    return report


def run_files(ruleset: Ruleset, paths: Iterable[str | Path]) -> Report:
    report = Report()
    for path in paths:
        run_cases(ruleset, load_cases(path), report)
    return report
