"""Per-run sequence bookkeeping: what has been seen, what is missing, what is a replay.

Records of one run can arrive out of order: a writer that lost the collector spools,
reconnects, and replays its spool, possibly after newer records went straight
through; the collector also reads leftover spool files itself. So a record below
the highest sequence number seen is not automatically a duplicate: it is taken when
it fills a known gap, and only skipped when that sequence number is already stored.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from auditwatch.store.lines import parse

# Kinds only the collector itself makes; a sender claiming them is lying.
COLLECTOR_KINDS = frozenset(("alert", "collector"))


class Peer(Protocol):
    pid: int


@dataclass
class RunTrack:
    """Sequence bookkeeping for one process run."""

    next_seq: int = 1
    # Sorted, disjoint [lo, hi] ranges below next_seq not seen yet.
    missing: list[list[int]] = field(default_factory=list)
    duplicates: int = 0
    peer_pid: int | None = None

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi in self.missing]

    def take_span(self, first: int, last: int) -> bool:
        """Mark ``first..last`` seen when they are exactly the next numbers; False
        (nothing marked) otherwise: then each record is taken one by one."""
        if first != self.next_seq:
            return False
        self.next_seq = last + 1
        return True

    def take(self, seq: int) -> bool:
        """Mark ``seq`` seen; False when it was seen already (a replay)."""
        if seq >= self.next_seq:
            if seq > self.next_seq:
                self.missing.append([self.next_seq, seq - 1])
            self.next_seq = seq + 1
            return True
        i = bisect.bisect_right(self.missing, [seq, float("inf")]) - 1
        if i < 0 or not (self.missing[i][0] <= seq <= self.missing[i][1]):
            self.duplicates += 1
            return False
        lo, hi = self.missing[i]
        pieces = [r for r in ([lo, seq - 1], [seq + 1, hi]) if r[0] <= r[1]]
        self.missing[i : i + 1] = pieces
        return True


class Sequencer:
    """Checks a record's shape and its place in its run's sequence."""

    def __init__(self) -> None:
        self.runs: dict[str, RunTrack] = {}

    def seed(self, run: str, seqs: Iterable[int]) -> None:
        """Start a run's bookkeeping from the sequence numbers already stored (sorted)."""
        track = self.runs.setdefault(run, RunTrack())
        expect = 1
        for seq in seqs:
            if seq < expect:
                continue  # alerts repeat their triggering record's seq
            if seq > expect:
                track.missing.append([expect, seq - 1])
            expect = seq + 1
        track.next_seq = max(track.next_seq, expect)

    def check(self, raw: bytes, peer: Peer | None) -> tuple[dict | None, str | None]:
        """(record, None) to store; (None, reason) to reject; (None, None) for a replay."""
        try:
            record = parse(raw)
        except ValueError as exc:
            return None, f"not JSON: {exc}"
        except RecursionError:
            return None, "not JSON: nested too deeply"
        if not isinstance(record, dict):
            return None, "not a JSON object"
        if record.get("v") != 1:
            return None, f"unsupported schema version {record.get('v')!r} (expected 1)"
        run, seq, pid = record.get("run"), record.get("seq"), record.get("pid")
        if (
            not isinstance(run, str)
            or type(seq) is not int
            or type(pid) is not int
            or seq < 1
            or not run
        ):
            return None, "missing or mistyped run/seq/pid"
        if record.get("kind") in COLLECTOR_KINDS:
            return None, f"kind {record.get('kind')!r} is made by the collector, not by senders"
        if peer is not None and peer.pid != pid:
            return None, f"record claims pid {pid} but was sent by pid {peer.pid}"
        track = self.runs.get(run)
        if track is None:
            track = self.runs[run] = RunTrack()
        if not track.take(seq):
            return None, None  # a replayed record: already stored, not an error
        return record, None
