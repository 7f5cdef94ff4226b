"""Records stored by the chunk: one SQLite row holds many records of one sender.

A row per record cost SQLite 13 µs (five B-trees to update, a dozen values to
bind; benchmarks/bench_sqlite_rows.py); at the collector's budget of 200,000
records/s there are 5 µs for everything. A chunk row pays that overhead once for
all its records (benchmarks/bench_store.py: 2.9 µs a record, unsealed).

The seal is the same as for a row per record (seal.py): every record keeps its own
position, hash link and MAC, so ``verify`` still names the first record changed.
A chunk is only packing:

    first_pos   position of its first record; record i is at first_pos + i
    n           how many records
    peer_*      the sender's credentials, shared by every record of the chunk
    raw         one record: its line byte for byte; more: each line followed by
                b"\\n" (lines holding a newline are therefore stored alone)
    seal        n x 96 bytes: prev_hash, hash, mac of each record
    run         the run of every record, when they all share one (else NULL)
    min_ts, max_ts, alerts, events
                for finding chunks: smallest and largest numeric ``ts``, how many
                alert records, and ``\\n``-framed distinct event names

The finding columns are not sealed; ``verify`` checks them against the records.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

from auditwatch.store.seal import HASH_SIZE

ENTRY = 3 * HASH_SIZE  # prev_hash, hash, mac
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite stores as an integer
MAX_RECORDS = 4_096  # records per chunk: bounds what a reader holds for one row
MAX_BYTES = 4 << 20

# The chunks table's columns, in order (INSERT binds them positionally).
COLUMNS = (
    "first_pos, n, peer_uid, peer_gid, peer_pid, raw, seal, run, min_ts, max_ts, alerts, events"
)
INSERT = f"INSERT INTO chunks ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


class Span(NamedTuple):
    """Consecutive plain event records of one run from one sender, handed over as
    one piece: the collector's fast path (``_ingest.scan_lines``) finds them, and
    the writer seals and stores them as one chunk without looking at each."""

    lines: bytes  # ``count`` records, each followed by b"\n"
    count: int
    run: str
    first_seq: int
    last_seq: int
    min_ts: int
    max_ts: int
    events: tuple[str, ...]  # the distinct event names
    peer: Any  # the sender's credentials (pid, uid, gid attributes) or None
    kinds: bytes  # per record, its event's index in ``events``


class Finding(NamedTuple):
    """A chunk's finding columns, as computed from its records."""

    run: Any
    min_ts: Any
    max_ts: Any
    alerts: int
    events: str | None


class Summary:
    """Accumulates the finding columns over a chunk's records, one record at a time."""

    __slots__ = ("alerts", "events", "first", "max_ts", "min_ts", "run")

    def __init__(self) -> None:
        self.first = True
        self.run: Any = None
        self.min_ts: Any = None
        self.max_ts: Any = None
        self.alerts = 0
        self.events: set[Any] = set()

    def add(self, run: Any, ts: Any, kind: Any, event: Any) -> None:
        if self.first:
            self.first = False
            self.run = run if type(run) is str else None
        elif run != self.run:
            self.run = None
        self.min_ts, self.max_ts = widen(self.min_ts, self.max_ts, ts)
        if kind == "alert":
            self.alerts += 1
        if type(event) is str:
            self.events.add(event)

    def add_span(self, run: str, min_ts: int, max_ts: int, events: tuple[str, ...]) -> None:
        """Plain events of one run (a span or a ``scan_lines`` run item) at once."""
        self.add(run, min_ts, "event", None)
        self.add(run, max_ts, "event", None)
        self.events.update(events)

    def finding(self) -> Finding:
        # A run SQLite cannot store as text reads as "several runs": always looked at.
        run = self.run if self.run is not None and storable(self.run) else None
        return Finding(run, self.min_ts, self.max_ts, self.alerts, frame_events(self.events))


def frame_events(names: Any) -> str | None:
    """Distinct event names framed as ``\\nname\\n...\\n`` ("" for none), so that one
    GLOB ``*\\n<pattern>\\n*`` finds the chunks that may hold a match. None when a
    name cannot be stored as text (a lone surrogate): such a chunk is always read.
    The glob is a first cut only; readers check each record of the chunks it finds."""
    if not names:
        return ""
    text = "\n" + "\n".join(sorted(names)) + "\n"
    return text if storable(text) else None


def widen(lo: Any, hi: Any, ts: Any) -> tuple[Any, Any]:
    """A time range (lo, hi; None when empty) widened by ``ts`` when it is an integer
    SQLite can hold; anything else in ``ts`` leaves the range as it is."""
    if type(ts) is not int or not INT64_MIN <= ts <= INT64_MAX:
        return lo, hi
    return (ts if lo is None or ts < lo else lo), (ts if hi is None or ts > hi else hi)


def storable(text: str) -> bool:
    """Can SQLite store this str as text (no lone surrogate)?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pack_raw(lines: list[bytes]) -> bytes:
    """A chunk's raw column from its records' lines (see the module docstring)."""
    if len(lines) == 1:
        return lines[0]
    return b"\n".join(lines) + b"\n"


def terminated(raw: bytes, n: int) -> bytes:
    """A chunk's records each followed by a newline, as ``_ingest.seal_chunk`` and
    ``scan_lines`` take them (a one-record chunk stores its line without one)."""
    return raw if n != 1 else raw + b"\n"


def unterminated(lines: bytes, n: int) -> bytes:
    """The raw column for ``n`` newline-terminated records: :func:`terminated` undone."""
    return lines if n != 1 else lines[:-1]


def split_raw(raw: bytes, n: int) -> list[bytes]:
    """The records' lines from a chunk's raw column; as many as it holds, which a
    damaged chunk may make differ from ``n`` (verify reports that)."""
    if n == 1:
        return [raw]
    if not raw:
        return []
    parts = raw.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return parts


def seal_entries(seal: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(prev_hash, hash, mac) of each record, from a chunk's seal column."""
    for off in range(0, len(seal) - ENTRY + 1, ENTRY):
        yield seal[off : off + 32], seal[off + 32 : off + 64], seal[off + 64 : off + 96]


_NO_SEAL = (b"", b"", b"")


def unpack(raw: bytes, n: Any, seal: Any) -> tuple[list[tuple[bytes, ...]], int, int]:
    """(line, prev_hash, hash, mac) of each record a chunk holds, and how many lines
    and seal entries it holds. A damaged chunk yields what it still holds: a line
    without a seal entry gets empty hashes, which verify reports."""
    lines = split_raw(raw, n if type(n) is int else -1)
    entries = list(seal_entries(seal)) if isinstance(seal, bytes) else []
    records = [
        (line, *(entries[i] if i < len(entries) else _NO_SEAL)) for i, line in enumerate(lines)
    ]
    return records, len(lines), len(entries)
