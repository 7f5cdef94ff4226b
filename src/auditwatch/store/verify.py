"""Check a store's seals: every record's hash link and MAC, positions, the sealed head.

The first problem is the one that matters (later ones are often its consequences),
so each is classified with a look at its neighbours: changed, forged, inserted,
missing (removed), moved (reordered), truncated, or the key does not fit.
"""

from __future__ import annotations

import hmac
import itertools
import json
import os
import sqlite3
import struct
import time
from typing import Any, Iterator, NamedTuple, Sequence

from auditwatch._ingest import scan_lines, seal_chunk
from auditwatch.store.chunks import ENTRY, Finding, Summary, seal_entries, terminated, unpack
from auditwatch.store.keys import StoreError, key_for_store, load_key
from auditwatch.store.rows import (
    alert_name,
    as_bytes,
    clean_column,
    columns_of,
    has_chunks,
    parse_record,
)
from auditwatch.store.seal import _LINK, Sealer, peer_from_columns
from auditwatch.store.sqlite import connect, read_meta, resolve_store_path

# How far to look for the position a misplaced record was sealed at.
_SEARCH = 4096
# Problems after this many are counted but not classified (classification is slow).
_DETAILED = 20

_SELECT = (
    "SELECT pos, run, seq, peer_uid, peer_gid, peer_pid, raw, prev_hash, hash, mac, "
    "run, seq, ts, kind, event, pid, alert, {quick} FROM records ORDER BY pos"
)
_CHUNKS = (
    "SELECT first_pos, n, peer_uid, peer_gid, peer_pid, raw, seal, "
    "run, min_ts, max_ts, alerts, events FROM chunks ORDER BY first_pos"
)
# With SQLite's JSON1 the columns are compared in C: 1 when they plainly match the
# raw line (then Python need not parse it), else the exact Python check decides.
_QUICK_COLUMNS = """CASE WHEN alert IS NULL AND kind IS NOT 'alert'
        AND json_valid(CAST(raw AS TEXT)) THEN (
    json_extract(CAST(raw AS TEXT), '$.run') IS run
    AND json_extract(CAST(raw AS TEXT), '$.seq') IS seq
    AND json_extract(CAST(raw AS TEXT), '$.ts') IS ts
    AND json_extract(CAST(raw AS TEXT), '$.kind') IS kind
    AND json_extract(CAST(raw AS TEXT), '$.event') IS event
    AND json_extract(CAST(raw AS TEXT), '$.pid') IS pid) ELSE 0 END"""


class Problem(NamedTuple):
    pos: int  # store position the problem is at (for removals: the first missing one)
    kind: str  # changed, forged, inserted, missing, moved, truncated, beyond-head, seal, key
    message: str
    run: str | None = None
    seq: int | None = None


class VerifyReport(NamedTuple):
    store: str
    records: int
    head_pos: int | None  # the sealed head, when its seal verifies
    head_hash: str | None
    problems: list[Problem]  # the first _DETAILED problems
    problem_count: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


class _Intact(NamedTuple):
    """A chunk whose seal and columns verified in one piece (see _Checker._intact)."""

    first: int
    n: int
    prev: bytes
    last: bytes  # the hash of its last record
    chunk: tuple


class _Row(NamedTuple):
    pos: int
    run: Any
    seq: Any
    uid: Any
    gid: Any
    pid: Any
    raw: bytes
    prev: bytes
    hash: bytes
    mac: bytes


def verify(store_path: str, key_path: str | None = None, columns: bool = True) -> VerifyReport:
    """Verify the store at ``store_path`` (a file or a run directory) with its key.

    ``columns`` also checks that the indexed columns (run, seq, ts, kind, event, pid,
    alert) still say what the sealed raw line says: they are not sealed themselves,
    and editing them would hide a record from queries.
    """
    t0 = time.perf_counter()
    path = resolve_store_path(store_path)
    if not os.path.isfile(path):
        raise StoreError(f"no store at {path}: give a store file or a run directory")
    conn = connect(path, readonly=True)
    try:
        meta = read_meta(conn, path)
        key = load_key(key_path or key_for_store(path, meta.get("store_id")))
        try:
            store_id = bytes.fromhex(meta["store_id"])
        except (KeyError, ValueError):
            raise StoreError(f"{path}: meta.store_id is missing or damaged") from None
        # One read transaction: the rows and the head seal from the same snapshot, even
        # while the collector keeps appending (WAL lets it).
        conn.execute("BEGIN")
        return _Checker(path, conn, Sealer(key, store_id), meta, t0, columns).run()
    finally:
        conn.close()


class _Checker:
    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        sealer: Sealer,
        meta: dict,
        t0: float,
        columns: bool = True,
    ) -> None:
        self.columns = columns
        self.path = path
        self.conn = conn
        self.sealer = sealer
        self.meta = meta
        self.t0 = t0
        self.problems: list[Problem] = []
        self.count = 0
        self.shift = 0  # sealed position minus stored position, after renumbering
        self.last_problem = -1

    def add(self, problem: Problem) -> None:
        self.count += 1
        self.last_problem = problem.pos
        if len(self.problems) < _DETAILED:
            self.problems.append(problem)

    def run(self) -> VerifyReport:
        sealer = self.sealer
        key_fits = hmac.compare_digest(sealer.key_check().hex(), self.meta.get("key_check", ""))
        rows, n_macs_ok = self._scan()
        if not key_fits:
            if n_macs_ok == 0:
                # Not one MAC verifies: the key is wrong, not every record.
                return self._report(
                    rows,
                    None,
                    None,
                    [Problem(0, "key", f"key does not match this store ({self.path})")],
                    1,
                )
            self.add(
                Problem(
                    0,
                    "meta",
                    "meta.store_id or meta.key_check was altered (the records' MACs verify "
                    "under this key)",
                )
            )
        head_pos, head_hash = self._check_head(rows)
        return self._report(rows, head_pos, head_hash, self.problems, self.count)

    def _report(self, rows, head_pos, head_hash, problems, count) -> VerifyReport:  # type: ignore[no-untyped-def]
        return VerifyReport(
            self.path, rows, head_pos, head_hash, problems, count, time.perf_counter() - self.t0
        )

    # -- the record scan -----------------------------------------------------------

    def _scan(self) -> tuple[int, int]:
        """One pass over the records; returns (rows, rows whose MAC verifies)."""
        sealer = self.sealer
        base_copy, inner_copy, outer_copy = sealer.hot_functions()
        pack = _LINK.pack
        compare = hmac.compare_digest
        check_columns = self.columns
        quick = _QUICK_COLUMNS if check_columns and _json1(self.conn) else "0"
        cursor = self._records(quick)
        expect_pos, expect_prev = 1, sealer.genesis
        rows = macs_ok = 0
        nxt = next(cursor, None)
        while nxt is not None:
            t = nxt
            nxt = next(cursor, None)  # one row of look-ahead, for classifying problems
            if type(t) is _Intact:
                if t.first == expect_pos and t.prev == expect_prev:
                    rows += t.n
                    macs_ok += t.n
                    expect_pos, expect_prev = t.first + t.n, t.last
                    continue
                # Sound in itself but not where the chain expects it: look at its
                # records one by one, as any other.
                records = self._chunk_records(t.chunk)
                if not records:
                    continue
                t = records[0]
                cursor = itertools.chain(records[1:], () if nxt is None else (nxt,), cursor)
                nxt = next(cursor, None)
            pos, _run, _seq, uid, gid, pid, raw, prev, digest, mac = t[:10]
            rows += 1
            h = base_copy()
            try:
                if uid is None and gid is None and pid is None:
                    h.update(prev + pack(pos + self.shift, 0, 0, 0, 0, len(raw)) + raw)
                elif uid is not None and gid is not None and pid is not None:
                    h.update(prev + pack(pos + self.shift, 1, uid, gid, pid, len(raw)) + raw)
                else:
                    h.update(b"peer credentials partly erased")
                content_ok = h.digest() == digest
            except (TypeError, struct.error):
                content_ok = False  # a column's type was changed (e.g. raw made TEXT)
            try:
                i = inner_copy()
                i.update(digest)
                o = outer_copy()
                o.update(i.digest())
                mac_ok = compare(o.digest(), mac)
            except TypeError:
                mac_ok = False
            macs_ok += mac_ok
            if content_ok and mac_ok and prev == expect_prev and pos == expect_pos:
                expect_pos, expect_prev = pos + 1, digest
                if check_columns and not t[17] and not _columns_match(t):
                    self.add(
                        Problem(
                            pos,
                            "columns",
                            f"record {_where(_Row(*t[:10]))}: indexed columns (run, seq, ts, "
                            "kind, event, pid, alert) do not match the sealed raw line — edited "
                            "to hide it from queries",
                            _run,
                            _seq,
                        )
                    )
                continue
            row = _Row(*t[:10])
            # The classifier reads only the next record's link (prev), which an intact
            # chunk gives for its first record.
            nrow = nxt if nxt is None or type(nxt) is _Intact else _Row(*nxt[:10])
            # A problem: classify it; the classifier says how the chain continues.
            expect_prev = self._classify(row, content_ok, mac_ok, expect_pos, expect_prev, nrow)
            expect_pos = pos + 1
        self._last = (expect_pos - 1, expect_prev)
        return rows, macs_ok

    def _records(self, quick: str) -> Iterator[tuple]:
        """Every record in position order, as (pos, run, seq, uid, gid, pid, raw, prev,
        hash, mac, the 7 indexed columns, columns-plainly-match): the old layout's
        rows, then each chunk's records, its packing checked on the way."""
        yield from self.conn.execute(_SELECT.format(quick=quick))
        if has_chunks(self.conn):
            for chunk in self.conn.execute(_CHUNKS):
                intact = self._intact(chunk)
                if intact is not None:
                    yield intact
                else:
                    yield from self._chunk_records(chunk)

    def _intact(self, chunk: tuple) -> _Intact | None:
        """The fast path: the chunk's seal recomputed in one native call equals the
        stored one (every hash, link and MAC), and its search columns fit. None when
        anything differs or cannot be recomputed so: then every record is checked
        and classified on its own."""
        first, n, uid, gid, ppid, raw, seal = chunk[:7]
        if not (
            isinstance(raw, bytes)
            and isinstance(seal, bytes)
            and type(n) is int
            and n > 0
            and len(seal) == n * ENTRY
            and (n > 1 or b"\n" not in raw)
        ):
            return None
        peer = None if uid is None and gid is None and ppid is None else (uid, gid, ppid)
        prev = seal[:32]
        try:
            again = seal_chunk(terminated(raw, n), n, first, prev, peer, self.sealer.key)
        except (TypeError, ValueError, OverflowError):
            return None
        if not hmac.compare_digest(again, seal):
            return None
        if self.columns and tuple(_finding(terminated(raw, n))) != chunk[7:]:
            return None
        return _Intact(first, n, prev, seal[-64:-32], chunk)

    def _chunk_records(self, chunk: tuple) -> list[tuple]:
        first, n, uid, gid, ppid, raw, seal = chunk[:7]
        records, n_lines, n_entries = unpack(as_bytes(raw), n, seal)
        if n != n_lines or n != n_entries or len(seal) != n_entries * ENTRY:
            self.add(
                Problem(
                    first,
                    "changed",
                    f"chunk at record {first}: packing damaged — it says {n} records but "
                    f"holds {n_lines} line(s) and {n_entries} seal entries",
                )
            )
        summary = Summary()
        out = []
        for i, (line, prev, digest, mac) in enumerate(records):
            rec = parse_record(line)
            cols = columns_of(rec)
            if rec is not None:
                summary.add(rec.get("run"), rec.get("ts"), rec.get("kind"), rec.get("event"))
            out.append((first + i, *cols[:2], uid, gid, ppid, line, prev, digest, mac, *cols, 1))
        if self.columns and tuple(summary.finding()) != tuple(chunk[7:]):
            self.add(
                Problem(
                    first,
                    "columns",
                    f"chunk of records {first}-{first + n_lines - 1}: its search columns "
                    "(run, ts range, alerts, events) do not match its sealed records — "
                    "edited to hide them from queries",
                )
            )
        return out

    def _classify(
        self,
        row: _Row,
        content_ok: bool,
        mac_ok: bool,
        expect_pos: int,
        expect_prev: bytes,
        nxt: _Row | _Intact | None,  # only its prev is read
    ) -> bytes:
        """Record the problem at ``row``; returns the hash the next record should link to."""
        pos, where = row.pos, _where(row)

        def add(at: int, kind: str, message: str) -> None:
            self.add(Problem(at, kind, message, row.run, row.seq))

        # Does the chain skip this row (the next record links to the one before it)?
        skipped = nxt is not None and nxt.prev == expect_prev
        if content_ok and mac_ok:
            if pos > expect_pos:
                n = pos - expect_pos
                span = f"record {expect_pos}" if n == 1 else f"records {expect_pos}-{pos - 1}"
                self.add(Problem(expect_pos, "missing", f"{span} missing: removed ({n} record(s))"))
            elif self._after_problem(pos):
                pass  # a broken link right after a reported problem is its consequence
            elif pos == 1:
                add(
                    pos,
                    "changed",
                    f"record {where}: chain does not start at this store's genesis "
                    "(meta.store_id changed, or records copied from another store)",
                )
            else:
                add(
                    pos,
                    "missing",
                    f"record {where}: does not follow record {pos - 1}: "
                    "records before it were removed or replaced",
                )
            return row.hash
        if not mac_ok:
            if skipped:
                self.shift -= 1
                add(
                    pos,
                    "inserted",
                    f"record {where}: inserted — not sealed with this store's key, and the "
                    "chain runs past it",
                )
                return expect_prev
            if nxt is None:
                add(pos, "forged", f"record {where}: not sealed with this store's key (forged)")
            elif content_ok:
                add(
                    pos,
                    "changed",
                    f"record {where}: content changed — its hash was recomputed but the MAC "
                    "does not verify (edited without the key)",
                )
            else:
                add(pos, "changed", f"record {where}: hash and MAC edited — neither verifies")
            return row.hash
        # The MAC verifies but the hash does not fit here: edited, or sealed elsewhere.
        if len(self.problems) >= _DETAILED:
            add(pos, "changed", f"record {where}: hash does not match")
            return row.hash
        here = pos + self.shift
        sealed_at = self._sealed_position(row, here)
        if sealed_at is None:
            add(pos, "changed", f"record {where}: content changed — hash does not match")
        elif sealed_at > here and (nxt is None or nxt.prev == row.hash):
            n = sealed_at - here
            span = f"record {here}" if n == 1 else f"records {here}-{sealed_at - 1}"
            add(
                here,
                "missing",
                f"{span} missing: removed ({n} record(s)), and the later records renumbered "
                f"(the record now at {pos}, run {_short(row.run)} seq {row.seq}, was sealed "
                f"as record {sealed_at})",
            )
            self.shift = sealed_at - pos
        else:
            dup = self._duplicate_of(row, sealed_at)
            if dup is not None and skipped:
                self.shift -= 1
                add(pos, "inserted", f"record {where}: inserted — a copy of record {dup}")
                return expect_prev
            add(
                pos,
                "moved",
                f"record {where}: out of place — it was sealed as record {sealed_at}: "
                "records were reordered or swapped",
            )
        return row.hash

    def _after_problem(self, pos: int) -> bool:
        return self.last_problem >= pos - 1

    def _sealed_position(self, row: _Row, here: int) -> int | None:
        try:
            peer = peer_from_columns(row.uid, row.gid, row.pid)
        except ValueError:
            return None
        try:
            for d in range(1, _SEARCH + 1):
                for cand in (here + d, here - d):
                    if (
                        cand >= 1
                        and self.sealer.record_hash(row.prev, cand, peer, row.raw) == row.hash
                    ):
                        return cand
        except (TypeError, struct.error):
            pass
        return None

    def _duplicate_of(self, row: _Row, sealed_at: int) -> int | None:
        found = self.conn.execute(
            "SELECT pos FROM records WHERE hash = ? AND pos != ? LIMIT 1", (row.hash, row.pos)
        ).fetchone()
        if found:
            return int(found[0])
        if not has_chunks(self.conn) or not isinstance(row.hash, bytes) or not row.hash:
            return None
        for first, seal in self.conn.execute(
            "SELECT first_pos, seal FROM chunks WHERE instr(seal, ?) > 0", (row.hash,)
        ):
            for i, (_prev, digest, _mac) in enumerate(seal_entries(seal)):
                if digest == row.hash and first + i != row.pos:
                    return int(first + i)
        return None

    # -- the head seal -------------------------------------------------------------

    def _check_head(self, rows: int) -> tuple[int | None, str | None]:
        last_pos, last_hash = self._last
        last_pos += self.shift  # compare in the numbering the records were sealed with
        try:
            seal = self.conn.execute("SELECT pos, hash, mac FROM seals WHERE id = 1").fetchone()
        except sqlite3.DatabaseError:
            seal = None
        if seal is None:
            self.add(
                Problem(last_pos + 1, "seal", "the head seal is missing: the end cannot be checked")
            )
            return None, None
        seal_pos, seal_hash, seal_mac = seal
        if not hmac.compare_digest(self.sealer.seal_mac(seal_pos, seal_hash), seal_mac):
            self.add(Problem(last_pos + 1, "seal", "the head seal does not verify: it was edited"))
            return None, None
        if seal_pos > last_pos:
            n = seal_pos - last_pos
            self.add(
                Problem(
                    last_pos + 1,
                    "truncated",
                    f"store truncated: sealed up to record {seal_pos}, but it ends at record "
                    f"{last_pos} — {n} record(s) removed from the end",
                )
            )
        elif seal_pos < last_pos:
            self.add(
                Problem(
                    seal_pos + 1,
                    "beyond-head",
                    f"records {seal_pos + 1}-{last_pos} lie beyond the sealed head "
                    f"(record {seal_pos}): appended without the key, or the seal was rolled back",
                )
            )
        elif seal_hash != last_hash:
            self.add(
                Problem(
                    last_pos,
                    "changed",
                    f"record {last_pos}: does not match the sealed head (the last record was "
                    "replaced)",
                )
            )
        return seal_pos, seal_hash.hex()


def _finding(lines: bytes) -> Finding:
    """The search columns of newline-terminated records: runs of plain events from
    scan_lines (C), the rest parsed one by one."""
    summary = Summary()
    for item in scan_lines(lines, None):
        if len(item) == 2:
            rec = parse_record(lines[item[0] : item[1]]) or {}
            summary.add(rec.get("run"), rec.get("ts"), rec.get("kind"), rec.get("event"))
        else:
            summary.add_span(item[2], item[7], item[8], item[9])
    return summary.finding()


def _columns_match(t: tuple) -> bool:
    """The slow, exact check: parse the raw line and compare what the writer stored."""
    try:
        rec = json.loads(t[6])
        get = rec.get
        kind = get("kind")
    except (ValueError, TypeError, AttributeError):
        return False
    want = [get("run"), get("seq"), get("ts"), kind, get("event"), get("pid")]
    want.append(alert_name(rec) if kind == "alert" else None)
    return [clean_column(v) for v in want] == list(t[10:17])


def _json1(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT json_extract('{\"a\": 1}', '$.a')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def _short(run: Any) -> str:
    return (run[:12] + "…") if isinstance(run, str) and len(run) > 12 else str(run)


def _where(row: _Row) -> str:
    return f"{row.pos} (run {_short(row.run)}, seq {row.seq})"


def describe(report: VerifyReport) -> Sequence[str]:
    """Human-readable lines: the verdict, then the problems found."""
    if report.ok:
        return [
            f"{report.store}: intact — {report.records} records, sealed head at record "
            f"{report.head_pos} (hash {report.head_hash[:16] if report.head_hash else '-'}…)"
        ]
    lines = [f"{report.store}: TAMPERED — {report.first.message}"]  # type: ignore[union-attr]
    if report.problem_count > 1:
        lines.append(f"{report.problem_count} problems in all; the first was listed above")
    return lines
