"""Liveness per run: gaps that stay open, silent processes, connections that end
without an exit record. Each finding becomes one collector record (notices.py).

Every check waits a little before it speaks, because the usual cause of each is
benign and resolves itself: a gap is filled by a spool replay, an exec successor
connects shortly after its predecessor's connection closed, a busy process sends
its heartbeat late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from auditwatch.collector.notices import notice
from auditwatch.collector.sequence import RunTrack

Emit = Callable[[dict], None]


@dataclass
class RunState:
    pid: int | None = None
    parent_run: str | None = None
    last_seen: float = 0.0
    last_seq: int = 0
    last_event: str | None = None
    exited: bool = False
    conns: set[int] = field(default_factory=set)
    closed_at: float | None = None  # every connection closed, no exit record yet
    silent: bool = False  # a silence notice was written and no record came since
    gap_since: float | None = None
    gaps_reported: set[tuple[int, int]] = field(default_factory=set)


class RunWatch:
    def __init__(
        self,
        tracks: dict[str, RunTrack],
        emit: Emit,
        *,
        heartbeat: float = 5.0,
        silence_factor: float = 3.0,
        gap_grace: float = 5.0,
        exit_grace: float = 2.0,
        forget_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracks = tracks  # the Sequencer's, read for open gaps
        self.emit = emit
        self.silence_after = heartbeat * silence_factor
        self.heartbeat = heartbeat
        self.gap_grace = gap_grace
        self.exit_grace = exit_grace
        self.forget_after = forget_after
        self.clock = clock
        self.runs: dict[str, RunState] = {}
        self._successors: set[tuple[str, int]] = set()  # (parent_run, pid) seen
        self.counts: dict[str, int] = {}

    def seen(self, record: dict, conn: int | None) -> None:
        run = record["run"]
        st = self.runs.get(run)
        if st is None:
            st = self.runs[run] = RunState(pid=record.get("pid"))
            parent = record.get("parent_run")
            st.parent_run = parent if isinstance(parent, str) else None
            if st.parent_run is not None and isinstance(st.pid, int):
                self._successors.add((st.parent_run, st.pid))
        seq = record.get("seq")
        if isinstance(seq, int) and seq > st.last_seq:
            st.last_seq = seq
            kind = record.get("kind")
            if kind == "exit":
                st.exited = True
            elif kind == "event":
                st.last_event = record.get("event")
        self._touch(run, st, conn)

    def knows(self, run: str) -> bool:
        return run in self.runs

    def seen_span(self, run: str, last_seq: int, last_event: str, conn: int | None) -> None:
        """Plain events of a run already known (see :meth:`knows`), the last one given."""
        st = self.runs[run]
        if last_seq > st.last_seq:
            st.last_seq = last_seq
            st.last_event = last_event
        self._touch(run, st, conn)

    def _touch(self, run: str, st: RunState, conn: int | None) -> None:
        st.last_seen = self.clock()
        st.silent = False
        if conn is not None and conn not in st.conns:
            st.conns.add(conn)
            st.closed_at = None  # the writer reconnected
        if self.tracks.get(run) is not None and self.tracks[run].missing and st.gap_since is None:
            st.gap_since = st.last_seen

    def closed(self, conn: int, runs: set[str]) -> None:
        now = self.clock()
        for run in runs:
            st = self.runs.get(run)
            if st is None:
                continue
            st.conns.discard(conn)
            if not st.conns and not st.exited:
                st.closed_at = now

    def check(self, final: bool = False) -> None:
        """Emit what is due; ``final`` at shutdown: every pending finding now."""
        now = self.clock()
        forget = []
        for run, st in self.runs.items():
            self._check_gaps(run, st, now, final)
            if st.closed_at is not None and (final or now - st.closed_at >= self.exit_grace):
                st.closed_at = None
                if not st.exited and (run, st.pid) not in self._successors:
                    self._emit(
                        notice(
                            "missing_exit",
                            run,
                            pid=st.pid,
                            last_seq=st.last_seq,
                            last_event=st.last_event,
                            reason="connection closed without an exit record",
                        )
                    )
                    st.exited = True  # reported once
            if (
                st.conns
                and not st.exited
                and not st.silent
                and now - st.last_seen >= self.silence_after
            ):
                st.silent = True
                self._emit(
                    notice(
                        "silence",
                        run,
                        pid=st.pid,
                        last_seq=st.last_seq,
                        silent_s=round(now - st.last_seen, 3),
                        heartbeat_s=self.heartbeat,
                    )
                )
            if not st.conns and st.closed_at is None and now - st.last_seen > self.forget_after:
                forget.append(run)
        for run in forget:
            # Finished long ago: keep the Sequencer's track (replays are still skipped)
            # but drop the liveness state.
            del self.runs[run]

    def _check_gaps(self, run: str, st: RunState, now: float, final: bool) -> None:
        if st.gap_since is None:
            return
        track = self.tracks.get(run)
        missing = track.missing if track is not None else []
        if not missing:
            st.gap_since = None
            return
        if not final and now - st.gap_since < self.gap_grace:
            return
        for lo, hi in missing:
            if (lo, hi) not in st.gaps_reported:
                st.gaps_reported.add((lo, hi))
                self._emit(notice("gap", run, pid=st.pid, first=lo, last=hi, missing=hi - lo + 1))
        st.gap_since = None if final else now

    def _emit(self, rec: dict) -> None:
        self.counts[rec["what"]] = self.counts.get(rec["what"], 0) + 1
        self.emit(rec)
