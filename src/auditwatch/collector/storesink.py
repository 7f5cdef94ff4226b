"""The store as a collector sink: records batched, sealed, and written.

Records are batched (5,000, or whatever came within 0.2 s), then sealed and
inserted in one transaction. With ``threaded`` (the default) that is a pipeline:
the collector thread hands each batch to a sealing thread, which hands it to a
writing thread, each behind a queue of ``depth`` batches (when SQLite falls behind,
the queues fill, the collector thread blocks, socket buffers fill and the audited
processes' writers wait: lossless back-pressure). Sealing (``_ingest.seal_chunk``)
and SQLite's work both run without the GIL, so neither holds up the collector
thread's Python work (the checks, the rules), whichever of the three is the
busiest (docs/performance.md). Without ``threaded`` the collector thread does all.

``flush()`` returns once everything accepted so far is committed: the collector
calls it before acknowledging an indicator, so an ack means "in the store".
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from typing import Callable

from auditwatch.store.chunks import Span
from auditwatch.store.seal import PeerCred
from auditwatch.store.sqlite import Item, SealedBatch, Store

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(f"auditwatch collector: {message}\n")


class StoreSink:
    def __init__(
        self,
        store: Store,
        *,
        batch: int = 5_000,
        max_delay: float = 0.2,
        depth: int = 3,
        threaded: bool = True,
        log: Log = _stderr,
    ) -> None:
        self.store = store
        self.batch = batch
        self.max_delay = max_delay
        self.log = log
        self._pending: list[Item | Span] = []
        self._pending_records = 0
        self._pending_since = 0.0
        self._head = store.head()  # where the next batch is sealed on
        self._to_seal: queue.Queue[list[Item | Span] | None] = queue.Queue(maxsize=depth)
        self._queue: queue.Queue[SealedBatch | None] = queue.Queue(maxsize=depth)
        self._done = threading.Condition()
        self._rescuing = threading.Lock()  # the sealer and the writer may both need it
        self._submitted = 0  # batches handed to the sealer
        self._written = 0  # batches finished with (committed or kept unstored)
        self.stored = 0
        self.failed = 0
        self._threads: list[threading.Thread] = []
        if threaded:
            self._threads = [
                threading.Thread(target=self._seal_loop, name="auditwatch-seal", daemon=True),
                threading.Thread(
                    target=self._write_loop,
                    args=(self._head,),
                    name="auditwatch-store",
                    daemon=True,
                ),
            ]
            for thread in self._threads:
                thread.start()

    # -- RecordSink ------------------------------------------------------------------

    def accept(self, raw: bytes, record: dict, peer: PeerCred | None) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((raw, record, peer))
        self._pending_records += 1
        if self._pending_records >= self.batch:
            self._submit()

    def accept_span(self, span: Span) -> None:
        """Plain events of one run, as one piece (the collector's fast path)."""
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(span)
        self._pending_records += span.count
        if self._pending_records >= self.batch:
            self._submit()

    def add(self, record: dict) -> bytes:
        """Store a record the collector made itself (an alert, a notice)."""
        raw = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )
        self.accept(raw, record, None)
        return raw

    def tick(self) -> None:
        """From the collector loop: write a partial batch once it has waited long enough."""
        if self._pending and time.monotonic() - self._pending_since >= self.max_delay:
            self._submit()

    def flush(self) -> None:
        """Return once everything accepted so far is committed (or reported failed)."""
        self._submit()
        with self._done:
            target = self._submitted
            while self._written < target and all(t.is_alive() for t in self._threads):
                self._done.wait(0.5)

    def close(self) -> None:
        self.flush()
        if self._threads:
            self._to_seal.put(None)  # the sealer passes it on to the writer
        for thread in self._threads:
            thread.join()

    # -- internals ---------------------------------------------------------------

    def _submit(self) -> None:
        if not self._pending:
            return
        items, self._pending, self._pending_records = self._pending, [], 0
        if not self._threads:
            head = self._head
            batch = self._seal(items)
            if batch is not None:
                self._head = self._write_one(batch, head)
            return
        with self._done:
            self._submitted += 1
        self._to_seal.put(items)  # blocks when the pipeline is behind: back-pressure

    def _seal(self, items: list[Item | Span]) -> SealedBatch | None:
        try:
            batch = self.store.seal(items, self._head)
        except Exception as exc:  # a record the writer cannot take: kept, not lost
            self._rescue(items, exc)
            return None
        self._head = batch.end
        return batch

    def _seal_loop(self) -> None:
        while True:
            items = self._to_seal.get()
            if items is None:
                self._queue.put(None)
                return
            batch = self._seal(items)
            if batch is None:
                self._finished()
            else:
                self._queue.put(batch)

    def _write_loop(self, committed: tuple[int, bytes]) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            committed = self._write_one(batch, committed)
            self._finished()

    def _finished(self) -> None:
        """One submitted batch is done with: committed, or kept in the unstored file."""
        with self._done:
            self._written += 1
            self._done.notify_all()

    def _write_one(self, batch: SealedBatch, head: tuple[int, bytes]) -> tuple[int, bytes]:
        """Write one batch onto ``head``; returns the head the store now ends at."""
        try:
            if batch.start != head:
                # An earlier batch failed: this one was sealed onto a head that never
                # reached the store. Seal it again onto the real one.
                batch = self.store.seal(batch.items, head)
            self.stored += self.store.write(batch)
            return batch.end
        except Exception as exc:
            self._rescue(batch.items, exc)
            return head

    def _rescue(self, items: list[Item | Span], exc: Exception) -> None:
        # The store refused the batch (disk full, tampered, locked): keep the lines in
        # a JSON-lines file beside it rather than lose them, and say so loudly.
        path = f"{self.store.path}.unstored-{os.getpid()}.jsonl"
        n = sum(item.count if type(item) is Span else 1 for item in items)
        with self._rescuing:
            try:
                with open(path, "ab") as f:
                    os.fchmod(f.fileno(), 0o600)
                    for item in items:
                        f.write(item.lines if type(item) is Span else item[0] + b"\n")
                where = f"kept in {path}"
            except OSError as err:
                where = f"and could not be kept ({err})"
            self.failed += n
        self.log(f"cannot store {n} records ({exc}); {where}")
