"""One collector, assembled: socket, sequence checks, sealed store, rules, liveness,
spool ingest. ``auditwatch run`` embeds it for one command; ``auditwatch collect``
runs it for a whole host. They differ only in options and in the extra sinks
``run`` adds (its run directory and summary).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Callable, Iterable

from auditwatch.collector.alerts import AlertCounts
from auditwatch.collector.liveness import RunWatch
from auditwatch.collector.notices import excerpt, notice, peer_dict
from auditwatch.collector.server import Collector, RecordSink
from auditwatch.collector.spool import SpoolIngest
from auditwatch.collector.storesink import StoreSink
from auditwatch.store.rows import Filters, iter_rows
from auditwatch.store.sqlite import Store

Log = Callable[[str], None]
REJECT_DETAILED = 20  # rejected-line notices per minute; more are counted in one
SEED_WINDOW_NS = 7 * 24 * 3600 * 10**9


def log_stderr(message: str) -> None:
    sys.stderr.write(f"auditwatch collector: {message}\n")
    sys.stderr.flush()


class CollectorService:
    def __init__(
        self,
        socket_path: str,
        store: Store,
        ruleset: Any = None,
        *,
        sinks: Iterable[RecordSink] = (),
        on_alert: Callable[[dict], None] | None = None,
        on_reject: Callable[[str, bytes, Any], None] | None = None,
        socket_mode: int = 0o600,
        heartbeat: float = 5.0,
        silence_factor: float = 3.0,
        spool_dir: str | None = None,
        spool_every: float = 5.0,
        remove_spooled: bool = True,
        batch: int = 5_000,
        threaded_store: bool = True,  # seal and insert in two threads: docs/collector.md
        scan: bool = True,
        log: Log = log_stderr,
    ) -> None:
        self.store = store
        self.log = log
        self.on_alert = on_alert
        self.on_reject = on_reject
        self.store_sink = StoreSink(store, batch=batch, threaded=threaded_store, log=log)
        self.alerts = AlertCounts()
        self.notices: Counter[str] = Counter()
        self.engine = None
        if ruleset is not None:
            from auditwatch.rules import AlertEngine

            self.engine = AlertEngine(ruleset, self._alert)
        # Order matters: a record is in the store batch before the alerts it raises.
        all_sinks: list[Any] = [self.store_sink, *sinks]
        if self.engine is not None:
            all_sinks.append(self.engine)
        self.collector = Collector(
            socket_path, all_sinks, self._reject, socket_mode=socket_mode, on_error=log, scan=scan
        )
        self.watch = RunWatch(
            self.collector.sequencer.runs,
            self._notice,
            heartbeat=heartbeat,
            silence_factor=silence_factor,
        )
        self.collector.watch = self.watch
        self.spool = (
            SpoolIngest(
                spool_dir, self.collector.feed, every=spool_every, remove_done=remove_spooled
            )
            if spool_dir
            else None
        )
        tickers: list[Callable[[], None]] = [self.store_sink.tick, self.watch.check]
        if self.engine is not None:
            tickers.append(self.engine.tick)
        if self.spool is not None:
            tickers.append(self.spool.tick)
        tickers.append(self._reject_summary)
        self.collector.tickers = tickers
        self._rejects_window = (time.monotonic(), 0)
        self._rejects_held = 0
        self.seeded_runs = self._seed()

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        if self.spool is not None:
            n = self.spool.scan()  # leftovers first: they are the oldest records
            if n:
                self.log(f"ingested {n} spooled record line(s) from {self.spool.directory}")
        self.collector.start()

    def stop(self, grace: float, accept_meanwhile: bool = True) -> int:
        """Drain, take the last spool lines, report what is pending, commit; returns
        the number of connections still open when the grace period ended."""
        still_open = self.collector.stop(grace, accept_meanwhile)
        with self.collector.lock:
            if self.spool is not None:
                self.spool.scan()
            self.watch.check(final=True)
            if self.engine is not None:
                self.engine.close()
            self._reject_summary(final=True)
        self.store_sink.close()
        return still_open

    # -- what the pieces report ----------------------------------------------------

    def _alert(self, alert: dict) -> None:
        self.alerts.add(alert)
        self.store_sink.add(alert)
        if self.on_alert is not None:
            self.on_alert(alert)

    def _notice(self, rec: dict) -> None:
        self.notices[rec["what"]] += 1
        self.store_sink.add(rec)

    def _reject(self, reason: str, raw: bytes, peer: Any) -> None:
        if self.on_reject is not None:
            self.on_reject(reason, raw, peer)
        now = time.monotonic()
        start, n = self._rejects_window
        if now - start >= 60:
            start, n = now, 0
        self._rejects_window = (start, n + 1)
        if n >= REJECT_DETAILED:
            self._rejects_held += 1
            self.notices["rejected"] += 1
            return
        self._notice(
            notice(
                "rejected",
                None,
                reason=reason,
                peer=peer_dict(peer),
                len=len(raw),
                excerpt=excerpt(raw),
            )
        )

    def _reject_summary(self, final: bool = False) -> None:
        if self._rejects_held and (final or time.monotonic() - self._rejects_window[0] >= 60):
            held, self._rejects_held = self._rejects_held, 0
            self.store_sink.add(
                notice("rejected", None, reason="more lines rejected (rate limit)", count=held)
            )

    # -- start-up ------------------------------------------------------------------

    def _seed(self) -> int:
        """Teach the Sequencer what the store already holds, so a restarted collector
        skips replays of records stored before it went down (recent and open runs)."""
        conn = self.store.conn
        since = time.time_ns() - SEED_WINDOW_NS
        runs = [
            r
            for (r,) in conn.execute(
                "SELECT run FROM runs WHERE exit_ts IS NULL OR last_ts >= ?", (since,)
            )
        ]
        for run in runs:
            seqs = sorted(
                row.seq for row in iter_rows(conn, Filters(runs=[run])) if type(row.seq) is int
            )
            self.collector.sequencer.seed(run, seqs)
        return len(runs)

    def summary(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts.as_dict(),
            "collector": dict(self.notices),
            "stored": self.store_sink.stored,
            "unstored": self.store_sink.failed,
        }
