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
import traceback
from typing import Callable, Iterable, Protocol

from auditwatch._ingest import scan_lines
from auditwatch.collector.sequence import RunTrack, Sequencer
from auditwatch.store.chunks import Span
from auditwatch.store.lines import parse
from auditwatch.store.seal import PeerCred  # one type from socket to seal

__all__ = ["Collector", "PeerCred", "RecordSink", "RunTrack", "Sequencer", "peer_credentials"]

MAX_LINE = 8 << 20  # a record is bounded by the hook; anything longer is garbage
RECV_BYTES = 1 << 18
TICK = 0.1  # seconds between calls of the periodic work (batch timers, liveness)


class RecordSink(Protocol):
    """Receives checked records. A sink that buffers may also define ``flush()``:
    the collector calls it before acknowledging an indicator (see ``_control``).
    It may define ``accept_span(span)`` to take a span whole, or
    ``wants_event(name) -> bool`` to be given only the records of a span whose event
    it wants (lines no sink wants are then not parsed)."""

    def accept(self, raw: bytes, record: dict, peer: PeerCred | None) -> None: ...


Reject = Callable[[str, bytes, "PeerCred | None"], None]


class Watch(Protocol):
    """Told which connection each accepted record came on, and when connections end."""

    def seen(self, record: dict, conn: int | None) -> None: ...

    def closed(self, conn: int, runs: set[str]) -> None: ...


def peer_credentials(sock: socket.socket) -> PeerCred | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


class Collector:
    """Receives records on a Unix socket until stopped."""

    def __init__(
        self,
        socket_path: str,
        sinks: Iterable[RecordSink],
        reject: Reject,
        *,
        socket_mode: int = 0o600,
        watch: Watch | None = None,
        tickers: Iterable[Callable[[], None]] = (),
        on_error: Callable[[str], None] | None = None,
        scan: bool = True,
    ) -> None:
        self.socket_path = socket_path
        # False: every line checked on its own, never as part of a span (the plain
        # path the spans must agree with; the tests compare the two).
        self.scan = scan
        self.sinks = list(sinks)
        self.reject = reject
        self.watch = watch
        self.tickers = list(tickers)
        self.on_error = on_error
        self.sequencer = Sequencer()
        # Sinks see one record at a time. Re-entrant: periodic work in the loop
        # thread may feed lines (spool files) through the same path.
        self.lock = threading.RLock()
        self._selector = selectors.DefaultSelector()
        _remove_stale_socket(socket_path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        os.chmod(socket_path, socket_mode)
        self._listener.listen(512)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._listening = True
        self._buffers: dict[socket.socket, bytearray] = {}
        self._peers: dict[socket.socket, PeerCred | None] = {}
        self._ids: dict[socket.socket, int] = {}
        self._runs_of: dict[socket.socket, set[str]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="auditwatch-collector", daemon=True)
        self.connections_total = 0
        self.sink_errors = 0
        self.span_records = 0  # records taken as part of a span (the fast path)
        self._next_tick = 0.0

    def start(self) -> None:
        self._thread.start()

    @property
    def open_connections(self) -> int:
        return len(self._buffers)

    def stop(self, grace: float, accept_meanwhile: bool = True) -> int:
        """Wait up to ``grace`` seconds for senders to finish, then stop.

        ``accept_meanwhile``: keep taking new connections during the grace period
        (``run``: a late grandchild still belongs to the run); otherwise the socket
        is removed first, so new processes spool instead (``collect`` shutting down).
        Returns the number of connections that were still open (their processes are
        still running: their remaining records are not in this store).
        """
        if not accept_meanwhile:
            with self.lock:
                self._stop_listening()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.open_connections:
            time.sleep(0.01)
        self._stopping.set()
        self._thread.join()
        still_open = len(self._buffers)
        with self.lock:
            for conn in list(self._buffers):
                self._close(conn, final=True)
            self._stop_listening()
        self._selector.close()
        return still_open

    def _stop_listening(self) -> None:
        if not self._listening:
            return
        self._listening = False
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

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
                    continue
                try:
                    self._read(key.fileobj)  # type: ignore[arg-type]
                except Exception:
                    # Whatever a sender did, the loop goes on; that connection ends.
                    self._error(f"connection dropped after an error:\n{traceback.format_exc()}")
                    self._close(key.fileobj, final=False)  # type: ignore[arg-type]
            now = time.monotonic()
            if now >= self._next_tick:
                self._next_tick = now + TICK
                self.tick()

    def tick(self) -> None:
        """The periodic work: sinks' batch timers, liveness checks, spool scans."""
        with self.lock:
            for fn in self.tickers:
                try:
                    fn()
                except Exception:
                    self._error(f"periodic task failed:\n{traceback.format_exc()}")

    def _drain_pending(self) -> bool:
        # After stop: take the connections still waiting in the listen backlog (a
        # sender may have written and closed before we accepted it), and keep
        # reading while any connection has data ready.
        if self._listening:
            self._accept()
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
            self.connections_total += 1
            self._ids[conn] = self.connections_total
            self._runs_of[conn] = set()
            self._selector.register(conn, selectors.EVENT_READ, None)

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
        end = data.rfind(b"\n")
        if end < 0:
            buf += data
            if len(buf) > MAX_LINE:
                self.reject(
                    f"line longer than {MAX_LINE} bytes", bytes(buf[:256]), self._peers[conn]
                )
                self._close(conn, final=False)
            return
        # The complete lines in one bytes object, copied once; the partial line after
        # them waits in the buffer. Each copy of a read costs here, where every
        # record passes (docs/performance.md).
        view = memoryview(data)
        if buf:
            lines = bytes(buf) + view[: end + 1]
            buf.clear()
        else:
            lines = data if end + 1 == len(data) else bytes(view[: end + 1])
        buf += view[end + 1 :]
        view.release()
        data = lines
        peer = self._peers[conn]
        conn_id = self._ids[conn]
        runs = self._runs_of[conn]
        acks = []
        if self.scan and len(data) <= MAX_LINE:
            # Runs of plain events in sequence come as spans (one check each);
            # everything else line by line. No line here can be over MAX_LINE.
            items = scan_lines(data, None if peer is None else peer.pid)
        else:
            items = _line_items(data)
        with self.lock:
            for item in items:
                if len(item) == 2:
                    line = data[item[0] : item[1]]
                    if line.startswith(b'{"ctl"'):
                        acks.append(self._control(line))
                        continue
                    run = self._line(line, peer, conn_id)
                else:
                    run = self._span(data, item, peer, conn_id)
                if run is not None and run not in runs:
                    runs.add(run)
        for ack in acks:
            if ack is not None:
                self._send(conn, ack)

    def _line(self, raw: bytes, peer: PeerCred | None, conn: int | None = None) -> str | None:
        """Check one line and hand it to the sinks; returns its run when accepted."""
        if len(raw) > MAX_LINE:
            self.reject(f"line longer than {MAX_LINE} bytes", raw[:256], peer)
            return None
        record, problem = self.sequencer.check(raw, peer)
        if problem:
            self.reject(problem, raw, peer)
        if record is None:
            return None
        if self.watch is not None:
            self.watch.seen(record, conn)
        for sink in self.sinks:
            try:
                sink.accept(raw, record, peer)
            except Exception:
                self._sink_failed(sink)
        return record["run"]  # type: ignore[no-any-return]

    def _span(self, data: bytes, item: tuple, peer: PeerCred | None, conn: int) -> str:
        """Consecutive plain events of one run (``scan_lines``), checked as one."""
        (start, end, run, first_seq, last_seq, count, last_event, min_ts, max_ts, events, kinds) = (
            item
        )
        track = self.sequencer.runs.get(run)
        watch = self.watch
        if (
            track is None
            or (watch is not None and not watch.knows(run))
            or not track.take_span(first_seq, last_seq)
        ):
            # Not simply the next records of a run under way (a replay, a gap, a
            # run's first records): each line the slow way.
            for line in data[start:end].split(b"\n")[:-1]:
                self._line(line, peer, conn)
            return run  # type: ignore[no-any-return]
        self.span_records += count
        if watch is not None:
            watch.seen_span(run, last_seq, last_event, conn)
        span = Span(
            data[start:end], count, run, first_seq, last_seq, min_ts, max_ts, events, peer, kinds
        )
        one_by_one: list[RecordSink] = []
        for sink in self.sinks:
            take = getattr(sink, "accept_span", None)
            if take is None:
                one_by_one.append(sink)
                continue
            try:
                take(span)
            except Exception:
                self._sink_failed(sink)
        if one_by_one:
            self._span_records(span, one_by_one)
        return run  # type: ignore[no-any-return]

    def _span_records(self, span: Span, sinks: list[RecordSink]) -> None:
        """A span's records for the sinks that take them one by one: each line parsed
        once, and only when one of them wants its event."""
        wanted = []
        for sink in sinks:
            wants = getattr(sink, "wants_event", None)
            try:
                wanted.append([wants is None or bool(wants(name)) for name in span.events])
            except Exception:
                wanted.append([False] * len(span.events))  # as if accept had failed
                self._sink_failed(sink)
        needed = [any(column) for column in zip(*wanted)]
        if not any(needed):
            return
        failed = [False] * len(sinks)
        for line, kind in zip(span.lines.split(b"\n"), span.kinds):
            if not needed[kind]:
                continue
            record = parse(line)
            for i, sink in enumerate(sinks):
                if wanted[i][kind] and not failed[i]:
                    try:
                        sink.accept(line, record, span.peer)
                    except Exception:
                        failed[i] = True  # one report per sink and span, as for a span
                        self._sink_failed(sink)

    def _sink_failed(self, sink: object) -> None:
        self.sink_errors += 1
        self._error(f"sink {type(sink).__name__} failed:\n{traceback.format_exc()}")

    def _error(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error(message)

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
        conn_id = self._ids.pop(conn, 0)
        runs = self._runs_of.pop(conn, set())
        with self.lock:
            if buf:
                # A sender that died mid-write leaves half a line: report it, keep going.
                self.reject("incomplete line at end of connection", bytes(buf[:4096]), peer)
            if self.watch is not None and not self._stopping.is_set():
                # At shutdown an open connection is a running process, not a lost one.
                self.watch.closed(conn_id, runs)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()


def _line_items(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each non-empty line of ``data`` (which ends with a newline)."""
    items, start = [], 0
    while start < len(data):
        end = data.index(b"\n", start)
        if end > start:
            items.append((start, end))
        start = end + 1
    return items


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by a collector that died; refuse to steal a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: a leftover
        return
    except OSError:
        return  # not a socket we can judge; bind() will say what is wrong
    finally:
        probe.close()
    raise OSError(f"{path}: another collector is listening on this socket")
