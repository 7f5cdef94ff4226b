"""Store schema and its migrations.

``MIGRATIONS[i]`` takes a store from version ``i`` to ``i + 1``; the version applied
is ``PRAGMA user_version`` (and ``meta.schema_version`` for people reading the
file). Steps only ever add: a new column must be nullable or have a default, so
rows sealed by an older version keep verifying (the seal covers ``raw`` and the
peer credentials, never the extracted columns).

Only SQL that SQLite 3.8-era builds understand: no RETURNING, STRICT, UPSERT,
generated columns or window functions.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Sequence, Union

FORMAT = "auditwatch-store"

Step = Union[str, Callable[[sqlite3.Connection], None]]

V1: list[Step] = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # pos is the rowid: contiguous from 1, assigned by the writer, sealed. The
    # extracted columns have no declared type (no affinity), so they hold exactly the
    # values taken from the record and verify can compare them with the raw line.
    """CREATE TABLE records (
        pos INTEGER PRIMARY KEY,
        run, seq, ts, kind, event, pid,
        alert,
        peer_uid INTEGER, peer_gid INTEGER, peer_pid INTEGER,
        raw BLOB NOT NULL,
        prev_hash BLOB NOT NULL, hash BLOB NOT NULL, mac BLOB NOT NULL
    )""",
    "CREATE INDEX records_run ON records (run, seq)",
    "CREATE INDEX records_ts ON records (ts)",
    "CREATE INDEX records_event ON records (event)",
    # Partial index: alerts are rare, so it costs nothing for ordinary records.
    "CREATE INDEX records_alert ON records (alert) WHERE alert IS NOT NULL",
    # The sealed head: the last position and hash, MAC'd; one row, updated per batch.
    """CREATE TABLE seals (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pos INTEGER NOT NULL, hash BLOB NOT NULL, mac BLOB NOT NULL, ts INTEGER NOT NULL
    )""",
]


def _backfill_runs(conn: sqlite3.Connection) -> None:
    from auditwatch.store.runs import rebuild_runs

    rebuild_runs(conn)


V2: list[Step] = [
    # Per-run summary, derived from the records (not sealed: rebuild_runs() recomputes it).
    """CREATE TABLE runs (
        run TEXT PRIMARY KEY,
        parent_run TEXT, pid INTEGER,
        exe TEXT, argv TEXT, cwd TEXT, installed TEXT,
        start_ts INTEGER, exit_ts INTEGER, exit_status TEXT,
        first_ts INTEGER, last_ts INTEGER, first_pos INTEGER, last_pos INTEGER,
        records INTEGER NOT NULL DEFAULT 0,
        events INTEGER NOT NULL DEFAULT 0,
        alerts INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX runs_parent ON runs (parent_run)",
    _backfill_runs,
]

V3: list[Step] = [
    # Records by the chunk (chunks.py): a row per record cost more than the
    # collector's whole budget per record. Rows written before stay in records;
    # positions continue across both tables, and the chain runs through them.
    """CREATE TABLE chunks (
        first_pos INTEGER PRIMARY KEY,
        n INTEGER NOT NULL,
        peer_uid INTEGER, peer_gid INTEGER, peer_pid INTEGER,
        raw BLOB NOT NULL,
        seal BLOB NOT NULL,
        run, min_ts, max_ts,
        alerts INTEGER NOT NULL DEFAULT 0,
        events TEXT
    )""",
    "CREATE INDEX chunks_run ON chunks (run)",
    "CREATE INDEX chunks_ts ON chunks (max_ts)",
    "CREATE INDEX chunks_alerts ON chunks (first_pos) WHERE alerts > 0",
]

MIGRATIONS: Sequence[list[Step]] = (V1, V2, V3)
CURRENT_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, upto: int = CURRENT_VERSION) -> int:
    """Apply the pending steps, one transaction per version; returns the new version.

    ``conn`` must be in autocommit mode (isolation_level=None).
    """
    version = user_version(conn)
    while version < upto:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version]:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
            version += 1
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(version),),
            )
            # PRAGMA user_version is written into page 1, inside this transaction.
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version
