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

from auditwatch.store import schema
from auditwatch.store.keys import (
    StoreError,
    StoreTampered,
    create_key,
    default_key_path,
    load_key,
    stored_key_path,
)
from auditwatch.store.runs import Special, rebuild_runs, update_runs
from auditwatch.store.seal import _LINK, PeerCred, Sealer

Item = Tuple[bytes, Dict[str, Any], Optional[PeerCred]]

# The rows bind their BLOBs as bytearray and an absent alert as an empty bytearray
# turned back into NULL here: before Python 3.13 the sqlite3 module binds only int,
# float, str and bytearray directly, and sends bytes and None through its adapter
# lookup, a failed attribute search each time. That lookup was a sixth of the
# collector's work per record (docs/performance.md). A record value is never a BLOB,
# so the empty BLOB cannot stand for a real alert name.
_INSERT = "INSERT INTO records VALUES (?,?,?,?,?,?,?,NULLIF(?,X''),?,?,?,?,?,?,?)"
_NO_ALERT = bytearray()


class SealedBatch(NamedTuple):
    """Rows ready to insert: sealed to chain from ``start`` to ``end`` (pos, hash)."""

    start: tuple[int, bytes]
    end: tuple[int, bytes]
    rows: list[tuple[Any, ...]]
    specials: list[Special]
    items: list[Item]  # what was sealed, to seal again onto another head


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
        specials: list[Special] = []
        state = [head[0], head[1]]
        rows = list(self._rows(items, state, specials))
        return SealedBatch(head, (state[0], state[1]), rows, specials, items)

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
        """Insert the rows, update runs and the head seal (inside a write transaction)."""
        conn = self.conn
        if not batch.rows:
            return
        conn.execute("SAVEPOINT rows")
        try:
            conn.executemany(_INSERT, batch.rows)
        except (
            UnicodeEncodeError,
            OverflowError,
            sqlite3.InterfaceError,
            sqlite3.ProgrammingError,
        ):
            # A field SQLite cannot take as it is (lone surrogate, int beyond 64 bits,
            # a list where a name belongs): redo the batch with the indexed columns
            # cleaned. The raw line is stored untouched either way.
            conn.execute("ROLLBACK TO rows")
            conn.executemany(
                _INSERT, (r[:1] + tuple(map(clean_column, r[1:8])) + r[8:] for r in batch.rows)
            )
        conn.execute("RELEASE rows")
        update_runs(conn, batch.start[0], batch.specials)
        self._write_seal(*batch.end)

    def append(self, raw: bytes, record: dict[str, Any], peer: PeerCred | None = None) -> int:
        """Store a single record (a one-record batch); returns its position."""
        self.append_many([(raw, record, peer)])
        return self.last_pos()

    def _rows(self, items: Iterable[Item], state: list[Any], specials: list[Special]) -> Iterator:
        # The hot loop: everything is a local, one hash and one HMAC per record.
        pos, prev = state
        base_copy, inner_copy, outer_copy = self._sealer.hot_functions()  # type: ignore[union-attr]
        pack = _LINK.pack
        prev_blob = bytearray(prev)  # see _INSERT for why BLOBs go in as bytearray
        for raw, rec, peer in items:
            pos += 1
            if peer is None:
                h = base_copy()
                h.update(prev + pack(pos, 0, 0, 0, 0, len(raw)) + raw)
                uid = gid = ppid = None
            else:
                uid, gid, ppid = peer.uid, peer.gid, peer.pid
                h = base_copy()
                h.update(prev + pack(pos, 1, uid, gid, ppid, len(raw)) + raw)
            digest = h.digest()
            digest_blob = bytearray(digest)
            i = inner_copy()
            i.update(digest)
            o = outer_copy()
            o.update(i.digest())
            kind = rec.get("kind")
            alert: Any = _NO_ALERT
            if kind != "event":
                run = rec.get("run")
                if kind == "start" or kind == "exit":
                    specials.append((run, kind, rec.get("ts"), rec))
                elif kind == "alert":
                    alert = _alert_name(rec)
            yield (
                pos,
                rec.get("run"),
                rec.get("seq"),
                rec.get("ts"),
                kind,
                rec.get("event"),
                rec.get("pid"),
                alert,
                uid,
                gid,
                ppid,
                bytearray(raw),
                prev_blob,
                digest_blob,
                bytearray(o.digest()),
            )
            prev = digest
            prev_blob = digest_blob
        # Runs when the generator is exhausted: the new head, for the seal.
        state[0] = pos
        state[1] = prev

    def _sealed_head(self) -> tuple[int, bytes]:
        """The last record, checked against the head seal before anything is chained on.

        Appending to a truncated or edited store would re-seal it and erase the
        evidence, so a mismatch stops the writer instead.
        """
        conn, sealer = self.conn, self._sealer
        assert sealer is not None
        last = conn.execute("SELECT pos, hash FROM records ORDER BY pos DESC LIMIT 1").fetchone()
        pos, digest = (last[0], last[1]) if last else (0, sealer.genesis)
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
        row = self.conn.execute("SELECT max(pos) FROM records").fetchone()
        return row[0] or 0

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def raw_lines(self, runs: Iterable[str] | None = None) -> Iterator[bytes]:
        """The raw lines exactly as received, in store order, optionally of some runs."""
        if runs is None:
            cur = self.conn.execute("SELECT raw FROM records ORDER BY pos")
        else:
            wanted = sorted(set(runs))
            marks = ",".join("?" * len(wanted))
            cur = self.conn.execute(
                f"SELECT raw FROM records WHERE run IN ({marks}) ORDER BY pos", wanted
            )
        for (raw,) in cur:
            yield as_bytes(raw)

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


def clean_column(value: Any) -> Any:
    """What an extracted column holds for a record value: the value itself when
    SQLite can store it faithfully, else an escaped string or NULL."""
    if value is None:
        return None
    if isinstance(value, int):  # bool included, stored as 0/1
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return None if value != value else value  # SQLite stores NaN as NULL
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    return None


def as_bytes(raw: Any) -> bytes:
    """A raw line as bytes, even if someone rewrote the BLOB as TEXT (verify reports it)."""
    if isinstance(raw, bytes):
        return raw
    return str(raw).encode("utf-8", "surrogateescape")


def _alert_name(rec: dict[str, Any]) -> str:
    # Alert records come from the rules engine; index them by rule name when present.
    for key in ("rule", "name", "alert"):
        value = rec.get(key)
        if isinstance(value, str) and value:
            return value
    return "alert"


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
