"""The writer's side of the wire: indicator acknowledgements, reconnect and replay."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from auditwatch.collector.server import Collector
from collector_helpers import wait_for
from helpers import audit_env, read_records, running_audited


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.flushes = 0

    def accept(self, raw: bytes, record: dict, peer: object) -> None:
        self.records.append(record)

    def flush(self) -> None:
        self.flushes += 1


def slow_acker(path: str, delay: float, answer: bool, seen: list[bytes]) -> socket.socket:
    """A collector stand-in that answers each ack request `delay` seconds after it
    came (a timer each: requests do not queue behind one another), or never."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        with conn, contextlib.suppress(OSError):  # the audited process may be gone
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    seen.append(line)
                    if line.startswith(b'{"ctl"') and answer:
                        ack = b'{"ack":%d}\n' % json.loads(line)["seq"]
                        threading.Timer(delay, send_quietly, (conn, ack)).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def send_quietly(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the audited process may be gone
        conn.sendall(data)


def run_code(env: dict) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", CODE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()


CODE = """\
import sys, time
import _auditwatch
before = _auditwatch.status()['ack_timeouts']   # the start record waited too
t0 = time.monotonic()
sys.addaudithook(lambda *a: None)   # an indicator: flushed and acknowledged
print(round(time.monotonic() - t0, 3))
print(_auditwatch.status()['ack_timeouts'] - before)
"""


def test_indicator_waits_for_the_collectors_ack(tmp_path):
    sock = str(tmp_path / "c.sock")
    seen: list[bytes] = []
    server = slow_acker(sock, delay=0.5, answer=True, seen=seen)
    out = run_code(audit_env(tmp_path, AUDITWATCH_SINK=f"unix:{sock}"))
    server.close()
    assert float(out[0]) >= 0.5 and out[1] == "0"
    lines = [json.loads(x) for x in seen]
    hook_rec = next(i for i, r in enumerate(lines) if r.get("event") == "sys.addaudithook")
    ctl = next(i for i, r in enumerate(lines) if "ctl" in r and i > hook_rec)
    assert lines[ctl]["seq"] >= lines[hook_rec]["seq"]


def test_start_does_not_wait_for_the_collectors_ack(tmp_path):
    # The start record is sent before any of the program's code runs, but only the
    # kernel has to take it: its ack comes with the next batch's. (It used to wait
    # for the ack, up to flush_timeout, in every process.)
    sock = str(tmp_path / "c.sock")
    seen: list[bytes] = []
    server = slow_acker(sock, delay=2.0, answer=True, seen=seen)
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=audit_env(tmp_path, AUDITWATCH_SINK=f"unix:{sock}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    server.close()
    assert float(out) - t0 < 1.0
    first = json.loads(seen[0])
    assert first["kind"] == "start" and first["seq"] == 1


def test_a_short_process_waits_for_one_ack_only(tmp_path):
    # A collector that answers every ack request 1 s after it came. The start record
    # and the flush at cpython._PySys_ClearAuditHooks (raised only while finalizing,
    # right before the exit record) are sent without waiting for an ack; the exit
    # drain waits for the ack of everything. One wait of 1 s, not three.
    sock = str(tmp_path / "c.sock")
    lines: list[bytes] = []
    server = slow_acker(sock, delay=1.0, answer=True, seen=lines)
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "pass"],
        env=audit_env(tmp_path, AUDITWATCH_SINK=f"unix:{sock}"),
        timeout=60,
        check=True,
    )
    elapsed = time.monotonic() - t0
    server.close()
    seen = [json.loads(line) for line in lines]
    assert 1.0 <= elapsed < 1.8
    assert any(r.get("event") == "cpython._PySys_ClearAuditHooks" for r in seen)
    assert seen[-2]["kind"] == "exit" and "ctl" in seen[-1]


def test_an_indicator_served_in_place_does_not_hang_on_a_full_socket(tmp_path):
    # The collector accepts and never reads. The program fills the socket's buffer
    # itself (MSG_DONTWAIT sends on a dup of the recorder's socket), while the writer
    # thread is parked; then an indicator. Its thread serves the record in place and
    # must not block on the full socket: after flush_timeout the batch goes to the
    # spool file and the program goes on.
    sock = str(tmp_path / "c.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock)
    server.listen(4)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    code = """\
import os, socket, stat, sys, time
time.sleep(0.3)  # the start-up records are out; the writer is parked
fd = next(int(n) for n in os.listdir('/proc/self/fd')
          if int(n) >= 200 and stat.S_ISSOCK(os.fstat(int(n)).st_mode))
s = socket.socket(fileno=os.dup(fd))
try:
    while True:
        s.send(b'x' * 65536, socket.MSG_DONTWAIT)
except BlockingIOError:
    pass
t0 = time.monotonic()
sys.addaudithook(lambda *a: None)
print(round(time.monotonic() - t0, 3))
"""
    env = audit_env(
        tmp_path,
        events="flush:sys.addaudithook,ignore:*",
        options="flush_timeout=0.5",
        AUDITWATCH_SINK=f"unix:{sock}",
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    server.close()
    assert out.returncode == 0, out.stderr
    assert 0.4 <= float(out.stdout) < 5
    spooled = [r for f in (tmp_path / "spool").glob("*.jsonl") for r in read_records(f)]
    assert any(r.get("event") == "sys.addaudithook" for r in spooled)


def test_unacknowledged_indicator_is_spooled_and_counted(tmp_path):
    sock = str(tmp_path / "c.sock")
    server = slow_acker(sock, delay=0, answer=False, seen=[])
    out = run_code(audit_env(tmp_path, options="flush_timeout=0.3", AUDITWATCH_SINK=f"unix:{sock}"))
    server.close()
    assert 0.3 <= float(out[0]) < 5 and out[1] == "1"
    (spool,) = (tmp_path / "spool").glob("*.jsonl")
    assert any(r.get("event") == "sys.addaudithook" for r in read_records(spool))


def test_collector_restart_loses_and_duplicates_nothing(tmp_path):
    sock = str(tmp_path / "c.sock")
    first, second = ListSink(), ListSink()
    rejected: list[str] = []
    c1 = Collector(sock, [first], lambda reason, raw, peer: rejected.append(reason))
    c1.start()
    code = """\
import sys, time
for i in range(40):
    sys.audit('tick', i)
    time.sleep(0.05)
"""
    env = audit_env(
        tmp_path,
        options="heartbeat=0.2",
        AUDITWATCH_SINK=f"unix:{sock}",
        AUDITWATCH_EVENTS="record:tick,ignore:*",
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    time.sleep(0.7)
    c1.stop(grace=0)  # the collector goes away mid-run
    time.sleep(0.5)
    c2 = Collector(sock, [second], lambda reason, raw, peer: rejected.append(reason))
    # The new collector knows what the old one stored, as a restarted collector
    # reading its store would.
    for r in first.records:
        c2.sequencer.check(json.dumps(r).encode(), None)
    c2.start()
    assert proc.wait(timeout=60) == 0
    c2.stop(grace=5)
    for line in (Path(tmp_path) / "spool").glob("*.jsonl"):
        for raw in line.read_bytes().splitlines():
            c2.feed(raw)
    records = first.records + second.records
    ticks = [r["args"][0] for r in records if r.get("event") == "tick"]
    assert sorted(ticks) == list(range(40)) and len(ticks) == 40
    seqs = [r["seq"] for r in records]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert first.records and second.records
    assert records[-1]["kind"] == "exit"
    assert all("incomplete line" in r for r in rejected)
    assert not os.path.exists(sock)


def test_drop_policy_counts_and_reports_what_it_drops(tmp_path):
    # A collector that stops reading: the socket fills, the writer blocks, the ring
    # fills, and with policy=drop the recording threads drop and count.
    sock = str(tmp_path / "c.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock)
    server.listen(1)
    received = bytearray()
    reading = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        reading.wait()
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                received.extend(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    code = """\
import sys
for i in range(200_000):
    sys.audit('flood', i)
import _auditwatch
print(_auditwatch.status()['dropped'])
"""
    env = audit_env(
        tmp_path,
        options="policy=drop;ring=1048576",
        AUDITWATCH_SINK=f"unix:{sock}",
        AUDITWATCH_EVENTS="record:flood,ignore:*",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    time.sleep(3)
    reading.set()
    out, _ = proc.communicate(timeout=120)
    t.join(timeout=30)
    server.close()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in bytes(received).splitlines()]
    records = [r for r in lines if "ctl" not in r]  # acks asked for by the start record
    floods = [r for r in records if r.get("event") == "flood"]
    drops = [r for r in records if r["kind"] == "drop"]
    dropped = sum(r["dropped"] for r in drops)
    assert dropped > 0 and dropped == int(out.strip()) == drops[-1]["total_dropped"]
    assert len(floods) + dropped == 200_000
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))


def test_a_record_leaves_within_moments_whether_the_writer_is_awake_or_asleep(tmp_path):
    # Awake (just after start-up, or after a batch), the writer comes back for new
    # records on its own and the program does not wake it; after a quiet spell it
    # sleeps, and the next record wakes it. Either way a record is in the sink long
    # before the next heartbeat (30 s here) would have carried it out.
    code = (
        "import sys, time\n"
        "sys.audit('while.awake')\n"
        "print('awake', flush=True)\n"
        "time.sleep(0.5)\n"  # far past the writer's naps: it is asleep now
        "sys.audit('after.quiet')\n"
        "print('quiet', flush=True)\n"
        "time.sleep(60)\n"
    )
    sink = tmp_path / "records.jsonl"
    with running_audited(tmp_path, code, options="heartbeat=30") as proc:
        for line, event in ((b"awake\n", "while.awake"), (b"quiet\n", "after.quiet")):
            assert proc.stdout.readline() == line
            arrived = wait_for(
                lambda e=event: any(r.get("event") == e for r in read_records(sink)),
                timeout=2.0,
                every=0.01,
            )
            assert arrived, f"{event} is still in the ring"


def test_silence_is_filled_with_heartbeats(tmp_path):
    code = "import time; time.sleep(1.2)"
    env = audit_env(tmp_path, options="heartbeat=0.2")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    records = read_records(tmp_path / "records.jsonl")
    beats = [r for r in records if r["kind"] == "heartbeat"]
    assert len(beats) >= 3
    assert all(b["pending"] == 0 and b["ack_timeouts"] == 0 for b in beats)
    gaps = [b["ts"] - a["ts"] for a, b in zip(records, records[1:])]
    assert max(gaps) < 0.6e9  # never silent for much longer than the interval
