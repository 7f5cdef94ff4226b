"""The collector in-process: sender checks, fuzzing, sequences, liveness, spool, acks."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from pathlib import Path

import pytest

from auditwatch.collector.service import CollectorService
from auditwatch.store import Store, verify
from auditwatch.store.rows import iter_rows

RUN = "ab" * 16


def rec(seq: int, kind: str = "event", run: str = RUN, pid: int | None = None, **extra) -> bytes:
    body = {"v": 1, "seq": seq, "run": run, "pid": os.getpid() if pid is None else pid}
    body.update({"ts": time.time_ns(), "kind": kind, "parent_run": None, "installed": "site"})
    if kind == "event":
        body.update({"event": "test.event", "args": [seq], "action": "record"})
    body.update(extra)
    return json.dumps(body).encode()


class Harness:
    def __init__(self, tmp: Path, **options) -> None:
        self.tmp = tmp
        self.sock = str(tmp / "c.sock")
        self.store_path = str(tmp / "store.sqlite")
        self.store = Store.open(self.store_path)
        self.service = CollectorService(self.sock, self.store, None, log=lambda m: None, **options)
        self.service.start()

    def send(self, *lines: bytes, close: bool = True) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(b"".join(line + b"\n" for line in lines))
        if close:
            s.close()
        return s

    def stop(self, grace: float = 5.0) -> None:
        self.service.stop(grace)
        self.store.close()

    def records(self) -> list[dict]:
        with Store.open(self.store_path, readonly=True) as st:
            return [json.loads(raw) for raw in st.raw_lines()]


@pytest.fixture
def harness(tmp_path):
    made = []

    def make(**options) -> Harness:
        where = tmp_path / f"h{len(made)}"
        where.mkdir()
        h = Harness(where, **options)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.store.conn is not None:
            with contextlib.suppress(Exception):
                h.stop(0)


def notices(records: list[dict], what: str) -> list[dict]:
    return [r for r in records if r["kind"] == "collector" and r["what"] == what]


def test_records_are_stored_sealed_with_the_senders_credentials(harness):
    h = harness()
    h.send(rec(1, "start"), rec(2), rec(3, "exit", status={"how": "exit", "code": 0}))
    h.stop()
    with Store.open(h.store_path, readonly=True) as st:
        rows = [(r.seq, r.ppid, r.uid) for r in iter_rows(st.conn)]
    assert rows == [(seq, os.getpid(), os.getuid()) for seq in (1, 2, 3)]
    assert verify(h.store_path).ok


def test_a_record_claiming_another_pid_is_refused_and_reported(harness):
    h = harness()
    h.send(rec(1), rec(2, pid=1), rec(3))
    h.stop()
    records = h.records()
    assert [r["seq"] for r in records if r["kind"] == "event"] == [1, 3]
    (refused,) = notices(records, "rejected")
    assert "claims pid 1" in refused["reason"]
    assert refused["peer"]["pid"] == os.getpid() and '"pid": 1' in refused["excerpt"]


def test_senders_cannot_forge_alerts_or_collector_records(harness):
    h = harness()
    h.send(rec(1, "alert", rule="Fake"), rec(2, "collector", what="gap"), rec(3))
    h.stop()
    records = h.records()
    assert [r["seq"] for r in records if "seq" in r] == [3]
    assert len(notices(records, "rejected")) == 2


def test_fuzzed_frames_never_stop_the_collector_and_are_reported(harness):
    h = harness()
    rng = random.Random(578)
    frames = [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000))) for _ in range(60)
    ] + [b"{" * 5000, b'{"v":1,"seq":', b"\x00" * 100, b"[" * 100000 + b"]" * 100000]
    for frame in frames:
        h.send(frame)  # one connection each, closed at once
    half_open = [h.send(frame, close=False) for frame in frames[:40]]  # many at once
    for s in half_open:
        s.close()
    # A line longer than the limit (8 MiB), sent in pieces: refused, connection dropped.
    big = socket.socket(socket.AF_UNIX)
    big.settimeout(20)
    big.connect(h.sock)
    try:
        chunk = b"x" * (1 << 20)
        for _ in range(10):
            big.sendall(chunk)
    except OSError:
        pass  # the collector hung up, as it should
    big.close()
    h.send(rec(1), rec(2))  # still serving
    h.stop()
    records = h.records()
    assert [r["seq"] for r in records if r["kind"] == "event"] == [1, 2]
    refused = [r for r in records if r["kind"] == "collector" and r["what"] == "rejected"]
    reasons = " ".join(r["reason"] for r in refused)
    assert "not JSON" in reasons or "incomplete line" in reasons
    # Reported, but bounded: detailed notices up to the rate limit, the rest counted.
    assert sum(r.get("count", 1) for r in refused) >= 100
    assert h.service.collector.sink_errors == 0
    assert verify(h.store_path).ok


def test_oversized_line_is_refused(harness):
    h = harness()
    with pytest.raises(OSError):  # the collector hangs up on it
        h.send(b'{"v":1,"pad":"' + b"a" * (9 << 20) + b'"}')
    h.send(rec(1))
    h.stop()
    records = h.records()
    assert any("longer than" in r["reason"] for r in notices(records, "rejected"))
    assert [r["seq"] for r in records if r["kind"] == "event"] == [1]


def test_out_of_order_replay_fills_gaps_and_duplicates_are_skipped(harness):
    h = harness()
    h.send(rec(1), rec(2), rec(5), rec(6))  # 3-4 went to the spool meanwhile
    h.send(rec(3), rec(4), rec(1), rec(5))  # the replay, with overlap
    h.stop()
    assert sorted(r["seq"] for r in h.records() if r["kind"] == "event") == [1, 2, 3, 4, 5, 6]
    assert notices(h.records(), "gap") == []


def test_a_gap_that_stays_open_is_reported(harness):
    h = harness()
    h.send(rec(1), rec(2), rec(7), rec(8, "exit", status={"how": "exit", "code": 0}))
    h.stop()
    (gap,) = notices(h.records(), "gap")
    assert (gap["run"], gap["first"], gap["last"], gap["missing"]) == (RUN, 3, 6, 4)


def test_missing_exit_and_silence(harness):
    h = harness(heartbeat=0.1, silence_factor=3)
    other = "cd" * 16
    h.send(rec(1, "start"), rec(2))  # closed without exit
    h.send(rec(1, "start", run=other), rec(2, "exit", run=other, status={"how": "exit"}))
    quiet = h.send(rec(1, "start", run="ef" * 16), close=False)  # open, then silent
    time.sleep(1.0)
    quiet.close()
    h.stop()
    records = h.records()
    assert [n["run"] for n in notices(records, "missing_exit")] == [RUN, "ef" * 16]
    (silent,) = notices(records, "silence")
    assert silent["run"] == "ef" * 16 and silent["silent_s"] >= 0.3


def test_exec_successor_is_not_a_missing_exit(harness):
    h = harness()
    successor = "cd" * 16
    h.send(rec(1, "start"), rec(2, event="os.exec"))
    h.send(rec(1, "start", run=successor, parent_run=RUN), rec(2, "exit", run=successor))
    h.stop()
    assert notices(h.records(), "missing_exit") == []


def test_ack_means_committed(harness):
    h = harness()
    s = h.send(rec(1), rec(2), b'{"ctl":"ack","seq":2}', close=False)
    s.settimeout(10)
    assert s.recv(100) == b'{"ack":2}\n'
    # Another reader sees both records now, long before the batch timer would fire.
    with Store.open(h.store_path, readonly=True) as st:
        assert [json.loads(r)["seq"] for r in st.raw_lines()] == [1, 2]
    s.close()
    h.stop()


def test_restarted_collector_skips_what_the_store_holds(harness, tmp_path):
    h = harness()
    h.send(*(rec(i) for i in range(1, 11)))
    h.stop()
    store = Store.open(h.store_path)
    again = CollectorService(h.sock, store, None, log=lambda m: None)
    assert again.seeded_runs == 1
    again.start()
    h.service, h.store = again, store
    h.send(*(rec(i) for i in range(1, 16)))  # a replay of 1-10, then 11-15
    h.stop()
    seqs = [r["seq"] for r in h.records() if r["kind"] == "event"]
    assert seqs == list(range(1, 16))
    assert verify(h.store_path).ok


def test_leftover_spool_files_are_ingested(harness, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    dead = 2**22 + 12345  # above pid_max on most systems: not a live process
    lines = [rec(i, pid=dead, run="12" * 16) for i in range(1, 6)]
    (spool / f"{'12' * 16}-{dead}.jsonl").write_bytes(b"\n".join(lines) + b"\n" + b'{"v":1,"se')
    h = harness(spool_dir=str(spool))
    h.stop()
    seqs = [r["seq"] for r in h.records() if r["kind"] == "event"]
    assert seqs == [1, 2, 3, 4, 5]
    # The half-written last line stays for a later scan; the file is kept until then.
    assert (spool / f"{'12' * 16}-{dead}.jsonl").exists()


def test_stale_socket_is_replaced_and_a_live_one_is_not_stolen(tmp_path):
    path = str(tmp_path / "c.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file remains, nobody listens: like a collector killed with -9
    store = Store.open(str(tmp_path / "s.sqlite"))
    service = CollectorService(path, store, None, log=lambda m: None)
    service.start()
    with pytest.raises(OSError, match="another collector"):
        CollectorService(path, Store.open(str(tmp_path / "t.sqlite")), None)
    service.stop(0)
    store.close()


def _mixed_stream(rng: random.Random, pid: int) -> list[bytes]:
    """Lines as senders write them, and as they go wrong: runs in sequence, a replay,
    a gap, interleaved runs, a wrong pid, a lying kind, garbage, duplicate keys."""
    runs = {f"{i:032x}": 0 for i in range(1, 4)}
    lines: list[bytes] = []
    for run in runs:
        runs[run] += 1
        lines.append(rec(runs[run], "start", run=run, pid=pid))
    for _ in range(3000):
        run = rng.choice(list(runs))
        roll = rng.random()
        if roll < 0.90:
            runs[run] += 1
            lines.append(rec(runs[run], run=run, pid=pid, event=rng.choice(["open", "import"])))
        elif roll < 0.93:
            lines.append(rec(max(1, runs[run] - rng.randrange(5)), run=run, pid=pid))  # replay
        elif roll < 0.95:
            runs[run] += rng.randrange(2, 5)  # a gap
            lines.append(rec(runs[run], run=run, pid=pid))
        elif roll < 0.96:
            runs[run] += 1
            lines.append(rec(runs[run], run=run, pid=pid + 1))  # another process's pid
        elif roll < 0.97:
            runs[run] += 1
            lines.append(rec(runs[run], "alert", run=run, pid=pid))  # senders may not
        elif roll < 0.98:
            lines.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 60))))
        elif roll < 0.99:
            runs[run] += 1
            line = rec(runs[run], run=run, pid=pid)
            lines.append(line[:-1] + b', "seq": %d}' % (runs[run] + 7))  # the last key wins
        else:
            lines.append(b"")
    for run in runs:
        runs[run] += 1
        lines.append(rec(runs[run], "exit", run=run, pid=pid, status={"how": "exit", "code": 0}))
    return [line.replace(b"\n", b" ") for line in lines]


def test_spans_store_exactly_what_line_by_line_checks_store(harness):
    # The fast path takes runs of plain events as spans; everything it cannot vouch
    # for goes line by line. Whatever the mix, the store must hold the same records
    # in the same order, and the same lines must be refused, as with every line
    # checked on its own.
    rng = random.Random(20261128)
    lines = _mixed_stream(rng, os.getpid())
    cuts = sorted(rng.sample(range(1, len(lines)), 40))
    pieces = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)])]

    class OneByOne:  # a sink without accept_span, as the rules engine
        def __init__(self) -> None:
            self.got: list[tuple[bytes, dict]] = []

        def accept(self, raw: bytes, record: dict, peer: object) -> None:
            self.got.append((raw, record))

    class Picky(OneByOne):  # one that wants only some events, as the rules engine
        def wants_event(self, name: str) -> bool:
            return name == "import"

    def wanted(got: list[tuple[bytes, dict]]) -> list[tuple[bytes, dict]]:
        return [(raw, r) for raw, r in got if r.get("kind") != "event" or r["event"] == "import"]

    picky: list[list[tuple[bytes, dict]]] = []

    def stored(scan: bool) -> tuple[list[bytes], list[str], list[tuple[bytes, dict]]]:
        refused: list[str] = []
        sink, choosy = OneByOne(), Picky()
        h = harness(
            scan=scan,
            sinks=[sink, choosy],
            on_reject=lambda reason, raw, peer: refused.append(reason),
        )
        s = h.send(close=False)
        for piece in pieces:  # one connection, in pieces: reads end at varying places
            s.sendall(b"".join(line + b"\n" for line in piece))
            time.sleep(0.002)
        s.close()
        h.stop()
        with Store.open(h.store_path, readonly=True) as st:
            kept = [r.raw for r in iter_rows(st.conn) if r.kind != "collector"]
        assert verify(h.store_path).ok
        spans.append(h.service.collector.span_records)
        picky.append(choosy.got)
        return kept, refused, sink.got

    spans: list[int] = []
    fast, slow = stored(True), stored(False)
    assert spans[0] > 1000 and spans[1] == 0
    assert len(fast[0]) > 2500 and len(fast[1]) > 50 and len(fast[2]) == len(fast[0])
    assert fast == slow
    # A sink with wants_event gets every record it wants, in order, either way; of a
    # span, only those (the others are not even parsed for it).
    assert wanted(picky[0]) == wanted(picky[1]) and len(wanted(picky[0])) > 1000
    assert picky[1] == fast[2] and len(picky[0]) < len(fast[2]) - 1000


def test_sinks_that_fail_are_reported_and_the_others_get_every_record(harness):
    class BadWants:  # wants_event itself fails: it gets none of a span's records
        def __init__(self) -> None:
            self.got: list[int] = []

        def wants_event(self, name: str) -> bool:
            raise RuntimeError("wants_event broke")

        def accept(self, raw: bytes, record: dict, peer: object) -> None:
            self.got.append(record["seq"])

    class BadAccept:  # accept fails: reported, at most once per span
        def accept(self, raw: bytes, record: dict, peer: object) -> None:
            raise RuntimeError("accept broke")

    class Keeps:
        def __init__(self) -> None:
            self.got: list[int] = []

        def accept(self, raw: bytes, record: dict, peer: object) -> None:
            self.got.append(record["seq"])

    bad_wants, keeps = BadWants(), Keeps()
    h = harness(sinks=[bad_wants, BadAccept(), keeps])
    h.send(rec(1, "start"), *[rec(seq) for seq in range(2, 300)])
    h.stop()
    assert h.service.collector.span_records > 200  # most came as spans
    seqs = list(range(1, 300))
    assert [r["seq"] for r in h.records() if r["kind"] in ("start", "event")] == seqs
    assert keeps.got == seqs
    assert len(bad_wants.got) < 100  # only what came line by line
    assert 2 <= h.service.collector.sink_errors < 200


def test_lines_of_a_span_no_sink_wants_are_not_parsed(harness, monkeypatch):
    from auditwatch.collector import server

    parsed: list[bytes] = []
    parse = server.parse

    def counting_parse(line: bytes) -> object:
        parsed.append(line)
        return parse(line)

    monkeypatch.setattr(server, "parse", counting_parse)

    class Imports:  # wants one event of the two
        def __init__(self) -> None:
            self.got: list[int] = []

        def wants_event(self, name: str) -> bool:
            return name == "import"

        def accept(self, raw: bytes, record: dict, peer: object) -> None:
            self.got.append(record["seq"])

    sink = Imports()
    h = harness(sinks=[sink])
    events = ["import" if seq % 3 == 0 else "open" for seq in range(300)]
    h.send(rec(1, "start"), *[rec(seq, event=events[seq]) for seq in range(2, 300)])
    h.stop()
    assert h.service.collector.span_records > 200
    imports = [seq for seq in range(2, 300) if events[seq] == "import"]
    assert [seq for seq in sink.got if seq in imports] == imports
    # Parsed: the imports, and lines that went line by line; not the spans' opens.
    assert len(parsed) >= len(imports)
    assert not [line for line in parsed if b'"open"' in line]
