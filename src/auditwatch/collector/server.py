"""The collector's receiving end: a Unix socket that audited processes stream
newline-delimited JSON records into.

One thread runs a selector loop over every connection. Each complete line is
checked (JSON object, schema version, sender pid against ``SO_PEERCRED``, sequence
numbers per run) and handed to the sinks; whatever fails a check goes to the
``reject`` callback with the reason, so bad input is reported and never silently
dropped. Sequence numbers make delivery idempotent: a record seen twice (a batch
replayed from a spool file after a failed write) is counted and skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

MAX_LINE = 8 << 20  # a record is bounded by the hook; anything longer is garbage
RECV_BYTES = 1 << 18


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


class RecordSink(Protocol):
    """Receives checked records. A sink that buffers may also define ``flush()``:
    the collector calls it before acknowledging an indicator (see ``_control``)."""

    def accept(self, raw: bytes, record: dict, peer: PeerCred | None) -> None: ...


@dataclass
class RunTrack:
    """Sequence bookkeeping for one process run."""

    next_seq: int = 1
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: int = 0
    peer_pid: int | None = None


Reject = Callable[[str, bytes, "PeerCred | None"], None]


def peer_credentials(sock: socket.socket) -> PeerCred | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


class Sequencer:
    """Checks a record's shape and its place in its run's sequence."""

    def __init__(self) -> None:
        self.runs: dict[str, RunTrack] = {}

    def check(self, raw: bytes, peer: PeerCred | None) -> tuple[dict | None, str | None]:
        try:
            record = json.loads(raw)
        except ValueError as exc:
            return None, f"not JSON: {exc}"
        if not isinstance(record, dict):
            return None, "not a JSON object"
        if record.get("v") != 1:
            return None, f"unsupported schema version {record.get('v')!r} (expected 1)"
        run, seq, pid = record.get("run"), record.get("seq"), record.get("pid")
        if not isinstance(run, str) or not isinstance(seq, int) or not isinstance(pid, int):
            return None, "missing or mistyped run/seq/pid"
        if peer is not None and peer.pid != pid:
            return None, f"record claims pid {pid} but was sent by pid {peer.pid}"
        track = self.runs.setdefault(run, RunTrack())
        if seq < track.next_seq:
            track.duplicates += 1
            return None, None  # a replayed record: already stored, not an error
        if seq > track.next_seq:
            track.gaps.append((track.next_seq, seq - 1))
        track.next_seq = seq + 1
        return record, None


class Collector:
    """Receives records on a Unix socket until stopped."""

    def __init__(self, socket_path: str, sinks: Iterable[RecordSink], reject: Reject) -> None:
        self.socket_path = socket_path
        self.sinks = list(sinks)
        self.reject = reject
        self.sequencer = Sequencer()
        self.lock = threading.Lock()  # sinks see one record at a time
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        os.chmod(socket_path, 0o600)
        self._listener.listen(512)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._buffers: dict[socket.socket, bytearray] = {}
        self._peers: dict[socket.socket, PeerCred | None] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="auditwatch-collector", daemon=True)
        self.connections_total = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def open_connections(self) -> int:
        return len(self._buffers)

    def stop(self, grace: float) -> int:
        """Stop accepting, wait up to ``grace`` seconds for senders to finish.

        Returns the number of connections that were still open (their processes are
        still running: their remaining records are not in this run).
        """
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.open_connections:
            time.sleep(0.01)
        self._stopping.set()
        self._thread.join()
        still_open = len(self._buffers)
        for conn in list(self._buffers):
            self._close(conn, final=True)
        self._listener.close()
        self._selector.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        return still_open

    def feed(self, raw: bytes, peer: PeerCred | None = None) -> None:
        """Take one line from elsewhere (a spool file) through the same checks."""
        with self.lock:
            self._line(raw, peer)

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set() or self._drain_pending():
            for key, _ in self._selector.select(timeout=0.05):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _drain_pending(self) -> bool:
        # After stop: keep reading while connections still have data ready.
        return bool(self._buffers) and bool(self._selector.select(timeout=0))

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._buffers[conn] = bytearray()
            self._peers[conn] = peer_credentials(conn)
            self._selector.register(conn, selectors.EVENT_READ, None)
            self.connections_total += 1

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, final=True)
            return
        buf = self._buffers[conn]
        buf += data
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                self.reject(
                    f"line longer than {MAX_LINE} bytes", bytes(buf[:256]), self._peers[conn]
                )
                self._close(conn, final=False)
            return
        lines = bytes(buf[:end]).split(b"\n")
        del buf[: end + 1]
        peer = self._peers[conn]
        acks = []
        with self.lock:
            for line in lines:
                if line.startswith(b'{"ctl"'):
                    acks.append(self._control(line))
                elif line:
                    self._line(line, peer)
        for ack in acks:
            if ack is not None:
                self._send(conn, ack)

    def _line(self, raw: bytes, peer: PeerCred | None) -> None:
        if len(raw) > MAX_LINE:
            self.reject(f"line longer than {MAX_LINE} bytes", raw[:256], peer)
            return
        record, problem = self.sequencer.check(raw, peer)
        if problem:
            self.reject(problem, raw, peer)
        if record is None:
            return
        for sink in self.sinks:
            sink.accept(raw, record, peer)

    def _control(self, raw: bytes) -> bytes | None:
        """A control line from a writer: ``{"ctl":"ack","seq":N}`` asks the collector
        to confirm that every record up to N has been stored. Writers send it after an
        indicator (a flushed or denied event) and wait for the answer before the
        audited operation continues."""
        try:
            ctl = json.loads(raw)
            seq = int(ctl["seq"])
        except (ValueError, KeyError, TypeError):
            return None
        if ctl.get("ctl") != "ack":
            return None
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()
        return b'{"ack":%d}\n' % seq

    @staticmethod
    def _send(conn: socket.socket, data: bytes) -> None:
        # Acks are tiny and the writer is waiting for them; a full socket buffer
        # means the writer is gone, and then there is nobody to tell.
        with contextlib.suppress(OSError):
            conn.send(data)

    def _close(self, conn: socket.socket, final: bool) -> None:
        buf = self._buffers.pop(conn, None)
        peer = self._peers.pop(conn, None)
        if buf:
            # A sender that died mid-write leaves half a line: report it, keep going.
            self.reject("incomplete line at end of connection", bytes(buf[:4096]), peer)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()
