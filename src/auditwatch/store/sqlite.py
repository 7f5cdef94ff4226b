"""The default record store: one SQLite file (WAL mode), every record sealed.

The raw JSON line is the source of truth; the other columns are extracted from it
for indexes. Writers hold the key (``<store>.key`` by default); readers (query,
export, runs) do not need it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import time
from typing import Any, Dict, Iterable, Iterator, NamedTuple, Optional, Tuple

from auditwatch._ingest import seal_chunk
from auditwatch.store import chunks, rows, schema
from auditwatch.store.chunks import Span
from auditwatch.store.keys import (
    StoreError,
    StoreTampered,
    create_key,
    default_key_path,
    load_key,
    stored_key_path,
)
from auditwatch.store.rows import iter_rows, last_link, last_position, record_count
from auditwatch.store.runs import (
    Special,
    Tally,
    rebuild_runs,
    special,
    tally,
    tally_span,
    update_runs,
)
from auditwatch.store.seal import PeerCred, Sealer

Item = Tuple[bytes, Dict[str, Any], Optional[PeerCred]]

# Chunks bind their BLOBs as bytearray: before Python 3.13 the sqlite3 module binds
# only int, float, str and bytearray directly, and sends bytes through its adapter
# lookup, a failed attribute search each time (docs/performance.md).


class SealedBatch(NamedTuple):
    """Chunk rows ready to insert: sealed to chain from ``start`` to ``end`` (pos, hash)."""

    start: tuple[int, bytes]
    end: tuple[int, bytes]
    rows: list[tuple[Any, ...]]  # chunks.COLUMNS
    specials: list[Special]
    tallies: dict[str, Tally]
    items: list[Item | Span]  # what was sealed, to seal again onto another head


def resolve_store_path(path: str) -> str:
    """A STORE argument: the SQLite file itself, or a run directory holding store.sqlite."""
    if os.path.isdir(path):
        return os.path.join(path, "store.sqlite")
    return path


def connect(path: str, readonly: bool) -> sqlite3.Connection:
    """Open a connection in autocommit mode (we issue BEGIN/COMMIT ourselves)."""
    uri = "file:" + _uri_path(os.path.abspath(path)) + ("?mode=ro" if readonly else "?mode=rw")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None
    return conn


def _uri_path(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def read_meta(conn: sqlite3.Connection, path: str) -> dict[str, str]:
    """The meta table, or StoreError saying why ``path`` is not an auditwatch store."""
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            raise StoreError(
                f"{path} is a SQLite database but not an auditwatch store (no meta table)"
            ) from None
        raise StoreError(f"{path} is not an auditwatch store ({exc})") from None
    meta = dict(rows)
    if meta.get("format") != schema.FORMAT:
        raise StoreError(f"{path} is not an auditwatch store (meta.format is missing)")
    return meta


class Store:
    """A sealed SQLite record store. Use :meth:`open`; one writer at a time per process."""

    def __init__(
        self, path: str, conn: sqlite3.Connection, meta: dict[str, str], sealer: Sealer | None
    ) -> None:
        self.path = path
        self.conn = conn
        self.meta = meta
        self.store_id = bytes.fromhex(meta["store_id"])
        self._sealer = sealer

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str,
        key_path: str | None = None,
        create: bool = True,
        readonly: bool = False,
        key_dir: str | None = None,
    ) -> Store:
        """Open (and with ``create`` make) a store.

        Writers get the key from ``key_path`` (default ``<store>.key``), created with
        mode 0600 together with a new store. With ``key_dir`` (and no ``key_path``)
        the key is ``<key_dir>/<store id>.key`` instead, kept apart from the store
        (see ``keys.key_for_store``). ``readonly`` opens without the key, for query,
        export and runs; an older store is migrated first if the file is writable.
        """
        path = resolve_store_path(path)
        by_id = key_path is None and key_dir is not None
        key_path = key_path or default_key_path(path)
        exists = os.path.exists(path)
        if not exists and (readonly or not create):
            raise StoreError(f"no store at {path}: give a store file or a run directory")
        if exists and os.path.isdir(path):
            raise StoreError(f"{path} is a directory, not a store file")
        if readonly:
            return cls._open_readonly(path)
        if not exists:
            # Records may hold secrets (argv, paths): the file is private like the key.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create store {path}: {exc.strerror}") from None
        conn = connect(path, readonly=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            _tune(conn)
            fresh = _is_empty(conn)
            if fresh:
                if not create:
                    raise StoreError(f"{path} is empty, not an auditwatch store")
                store_id = os.urandom(16)
                if by_id:
                    key_path = stored_key_path(key_dir, store_id.hex())  # type: ignore[arg-type]
                key = _new_store_key(key_path)
                _initialise(conn, key, store_id)
            else:
                found = read_meta(conn, path)
                _check_version(conn, path)
                if by_id:
                    key_path = stored_key_path(key_dir, found["store_id"])  # type: ignore[arg-type]
                key = load_key(key_path)
            meta = read_meta(conn, path)
            sealer = Sealer(key, bytes.fromhex(meta["store_id"]))
            if not hmac.compare_digest(sealer.key_check().hex(), meta.get("key_check", "")):
                raise StoreError(
                    f"key file {key_path} does not match store {path}: it was sealed under "
                    "another key; use the key file created with this store"
                )
            schema.migrate(conn)
            meta = read_meta(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path} is not a usable auditwatch store ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, meta, sealer)

    @classmethod
    def _open_readonly(cls, path: str) -> Store:
        conn = connect(path, readonly=True)
        try:
            read_meta(conn, path)
            version = _check_version(conn, path)
            if version < schema.CURRENT_VERSION:
                conn.close()
                if not os.access(path, os.W_OK):
                    raise StoreError(
                        f"store {path} has schema version {version} and needs migrating to "
                        f"{schema.CURRENT_VERSION}, but the file is read-only; "
                        "query a writable copy"
                    )
                rw = connect(path, readonly=False)
                try:
                    schema.migrate(rw)
                finally:
                    rw.close()
                conn = connect(path, readonly=True)
            _tune(conn)
            meta = read_meta(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, meta, None)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------

    def append_many(self, items: Iterable[Item]) -> int:
        """Seal and store records in one transaction; returns how many were stored.

        Each item is (raw line as received, the record parsed from it, the sender's
        credentials or None). All or nothing: on error the batch is rolled back.
        """
        if self._sealer is None:
            raise StoreError(f"store {self.path} was opened read-only")
        if not isinstance(items, (list, tuple)):
            items = list(items)
        with self._write_transaction():
            # Read the head inside the write lock: another writer may have appended.
            batch = self.seal(items, self._sealed_head())
            self._insert(batch)
        return batch.end[0] - batch.start[0]

    def head(self) -> tuple[int, bytes]:
        """The sealed head (position, hash), checked: where the next batch chains on."""
        self.conn.execute("BEGIN")
        try:
            return self._sealed_head()
        finally:
            self.conn.execute("COMMIT")

    def seal(self, items: Iterable[Item], head: tuple[int, bytes]) -> SealedBatch:
        """Hash and MAC a batch that chains onto ``head``; touches no database.

        With :meth:`write` this lets one thread seal while another inserts: the
        collector seals batch n+1 while SQLite is still writing batch n.
        """
        if self._sealer is None:
            raise StoreError(f"store {self.path} was opened read-only")
        if not isinstance(items, list):
            items = list(items)
        return self._chunks(items, head)

    def write(self, batch: SealedBatch) -> int:
        """Store a sealed batch in one transaction; it must chain onto the stored head."""
        with self._write_transaction():
            if self._sealed_head() != batch.start:
                raise StoreTampered(
                    f"store {self.path} changed under this writer (another writer appended, "
                    "or records were removed); refusing to append"
                )
            self._insert(batch)
        return batch.end[0] - batch.start[0]

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back on any error: all or nothing."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _insert(self, batch: SealedBatch) -> None:
        """Insert the chunks, update runs and the head seal (inside a write transaction)."""
        if not batch.rows:
            return
        self.conn.executemany(chunks.INSERT, batch.rows)
        update_runs(self.conn, batch.tallies, batch.specials)
        self._write_seal(*batch.end)

    def append(self, raw: bytes, record: dict[str, Any], peer: PeerCred | None = None) -> int:
        """Store a single record (a one-record batch); returns its position."""
        self.append_many([(raw, record, peer)])
        return self.last_pos()

    def _chunks(self, items: list[Item | Span], head: tuple[int, bytes]) -> SealedBatch:
        """Seal ``items`` onto ``head`` and pack them into chunk rows: consecutive
        records of one sender share a chunk, and a span is a chunk of its own."""
        sealer = self._sealer
        assert sealer is not None
        out: list[tuple[Any, ...]] = []
        specials: list[Special] = []
        tallies: dict[str, Tally] = {}
        pos, prev = head
        lines: list[bytes] = []
        summary = chunks.Summary()
        key: Any = None
        size = 0

        def close() -> None:
            # Seal the open chunk's records in one native call and pack the row.
            nonlocal pos, prev, lines, summary, size
            if not lines:
                return
            n, raw = len(lines), chunks.pack_raw(lines)
            if n == 1 and b"\n" in raw:  # stored alone, byte for byte
                seal = sealer.seal_one(prev, pos + 1, _peer_cred(key), raw)
            else:
                seal = seal_chunk(chunks.terminated(raw, n), n, pos + 1, prev, key, sealer.key)
            out.append(_chunk_row(pos + 1, key, n, raw, seal, summary.finding()))
            pos += len(lines)
            prev = seal[-64:-32]
            lines, summary, size = [], chunks.Summary(), 0

        for item in items:
            if type(item) is Span:
                close()
                span_key = _peer_key(item.peer)
                seal = seal_chunk(item.lines, item.count, pos + 1, prev, span_key, sealer.key)
                span_summary = chunks.Summary()
                span_summary.add_span(item.run, item.min_ts, item.max_ts, item.events)
                raw = chunks.unterminated(item.lines, item.count)
                out.append(
                    _chunk_row(pos + 1, span_key, item.count, raw, seal, span_summary.finding())
                )
                tally_span(tallies, item, pos + 1)
                pos += item.count
                prev = seal[-64:-32]
                continue
            raw, rec, peer = item  # type: ignore[misc]
            peer_key = _peer_key(peer)
            if lines and (
                peer_key != key
                or len(lines) >= chunks.MAX_RECORDS
                or size >= chunks.MAX_BYTES
                or b"\n" in raw
                or b"\n" in lines[0]
            ):
                close()
            key = peer_key
            lines.append(raw)
            size += len(raw)
            kind = rec.get("kind")
            summary.add(rec.get("run"), rec.get("ts"), kind, rec.get("event"))
            tally(tallies, pos + len(lines), rec)
            if kind == "start" or kind == "exit":
                sp = special(rec)
                if sp is not None:
                    specials.append(sp)
        close()
        return SealedBatch(head, (pos, bytes(prev)), out, specials, tallies, items)

    def _sealed_head(self) -> tuple[int, bytes]:
        """The last record, checked against the head seal before anything is chained on.

        Appending to a truncated or edited store would re-seal it and erase the
        evidence, so a mismatch stops the writer instead.
        """
        conn, sealer = self.conn, self._sealer
        assert sealer is not None
        last = last_link(conn)
        pos, digest = last if last else (0, sealer.genesis)
        seal = conn.execute("SELECT pos, hash, mac FROM seals WHERE id = 1").fetchone()
        if (
            seal is None
            or (seal[0], seal[1]) != (pos, digest)
            or not hmac.compare_digest(sealer.seal_mac(seal[0], seal[1]), seal[2])
        ):
            raise StoreTampered(
                f"store {self.path} does not end at its sealed head (truncated, appended to "
                "or edited); refusing to append. Run `auditwatch verify` on it and start a "
                "new store"
            )
        return pos, digest

    def _write_seal(self, pos: int, digest: bytes) -> None:
        mac = self._sealer.seal_mac(pos, digest)  # type: ignore[union-attr]
        self.conn.execute(
            "INSERT OR REPLACE INTO seals (id, pos, hash, mac, ts) VALUES (1, ?, ?, ?, ?)",
            (pos, digest, mac, time.time_ns()),
        )

    def rebuild_runs(self) -> None:
        """Recompute the derived ``runs`` table from the records."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            rebuild_runs(self.conn)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- reading -------------------------------------------------------------------

    def last_pos(self) -> int:
        return last_position(self.conn)

    def count(self) -> int:
        return record_count(self.conn)

    def raw_lines(self, runs: Iterable[str] | None = None) -> Iterator[bytes]:
        """The raw lines exactly as received, in store order, optionally of some runs."""
        filters = rows.Filters(runs=sorted(set(runs))) if runs is not None else rows.NO_FILTERS
        if runs is not None and not filters.runs:
            return
        for row in iter_rows(self.conn, filters):
            yield row.raw

    def resolve_run(self, prefix: str) -> str:
        """A full run id from a unique prefix of it (as shown by ``auditwatch runs``)."""
        text = prefix.strip().lower()
        if not text or any(c not in "0123456789abcdef" for c in text):
            raise StoreError(f"run id {prefix!r} is not hexadecimal")
        rows = self.conn.execute(
            "SELECT run FROM runs WHERE substr(run, 1, ?) = ? ORDER BY run LIMIT 2",
            (len(text), text),
        ).fetchall()
        if not rows:
            raise StoreError(f"no run {prefix} in {self.path}; `auditwatch runs` lists them")
        if len(rows) > 1 and rows[0][0] != text:
            raise StoreError(f"run id {prefix} is ambiguous in {self.path}; give more digits")
        return str(rows[0][0])


def _chunk_row(
    first: int, peer: Any, n: int, raw: bytes, seal: bytes, finding: chunks.Finding
) -> tuple[Any, ...]:
    uid, gid, pid = peer if peer is not None else (None, None, None)
    return (first, n, uid, gid, pid, bytearray(raw), bytearray(seal), *finding)


def _peer_key(peer: Any) -> tuple[int, int, int] | None:
    return None if peer is None else (peer.uid, peer.gid, peer.pid)


def _peer_cred(key: tuple[int, int, int] | None) -> PeerCred | None:
    return None if key is None else PeerCred(pid=key[2], uid=key[0], gid=key[1])


def _tune(conn: sqlite3.Connection) -> None:
    # WAL + synchronous=NORMAL: a crash never corrupts the file; a power cut may lose
    # the last transactions, which the head seal then shows as not yet written.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-32768")
    conn.execute("PRAGMA temp_store=MEMORY")


def _is_empty(conn: sqlite3.Connection) -> bool:
    try:
        n = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"not an auditwatch store: {exc}") from None
    return n == 0


def _check_version(conn: sqlite3.Connection, path: str) -> int:
    version = schema.user_version(conn)
    if version > schema.CURRENT_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}, newer than this auditwatch "
            f"understands ({schema.CURRENT_VERSION}); upgrade auditwatch"
        )
    return version


def _new_store_key(key_path: str) -> bytes:
    if os.path.exists(key_path):
        # A fresh store may reuse an existing key file (e.g. a collector's key).
        return load_key(key_path)
    return create_key(key_path)


def _initialise(conn: sqlite3.Connection, key: bytes, store_id: bytes) -> None:
    schema.migrate(conn, upto=1)
    sealer = Sealer(key, store_id)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [
            ("format", schema.FORMAT),
            ("store_id", store_id.hex()),
            ("key_check", sealer.key_check().hex()),
            ("created_ns", str(time.time_ns())),
            ("record_schema", "1"),
        ],
    )
    # Seal the empty chain too, so deleting every record shows as truncation.
    conn.execute(
        "INSERT INTO seals (id, pos, hash, mac, ts) VALUES (1, 0, ?, ?, ?)",
        (sealer.genesis, sealer.seal_mac(0, sealer.genesis), time.time_ns()),
    )
    conn.execute("COMMIT")
