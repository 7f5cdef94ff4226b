"""verify: each kind of tampering is found, and named at the right record."""

from __future__ import annotations

import importlib
import json
import os
import random
import sqlite3

import pytest

import _layout
from _store_records import sample_items
from auditwatch.store import Store, StoreError
from auditwatch.store import verify as verify_store
from auditwatch.store.seal import Sealer

BATCHES = 3

# Every tampering is tried in both layouts (see _layout.py): "rows", the row per
# record of stores before schema version 3, and "chunks", what the writer writes
# now. Tests edit rows in SQL (db() lays the store out as rows first); verify()
# packs a "chunks" store back into chunks before checking it.
_LAYOUT: dict[str, str] = {}
_EXPLODED: set[str] = set()


@pytest.fixture(params=["rows", "chunks"])
def store(tmp_path, request):
    path = str(tmp_path / "store.sqlite")
    with Store.open(path) as st:
        for _ in range(BATCHES):  # several batches: the chain runs across them
            st.append_many(sample_items())
    _LAYOUT[path] = request.param
    if request.param == "rows":
        _layout.explode(path)
    return path


def verify(path, *args, **kw):
    if _LAYOUT.get(path) == "chunks" and path in _EXPLODED:
        _EXPLODED.discard(path)
        _layout.repack(path)
    return verify_store(path, *args, **kw)


def n_records():
    return BATCHES * len(sample_items())


def db(path):
    if _LAYOUT.get(path) == "chunks" and path not in _EXPLODED:
        _layout.explode(path)
        _EXPLODED.add(path)
    return sqlite3.connect(path, isolation_level=None)


def first(path, **kw):
    report = verify(path, **kw)
    assert not report.ok
    return report, report.first


def test_clean_store_verifies(store):
    report = verify(store)
    assert report.ok and report.problems == [] and report.problem_count == 0
    assert report.records == n_records() == report.head_pos


def test_empty_store_verifies(tmp_path):
    path = str(tmp_path / "s.sqlite")
    Store.open(path).close()
    report = verify(path)
    assert report.ok and report.records == 0 and report.head_pos == 0


def test_edited_arguments(store):
    conn = db(store)
    raw = conn.execute("SELECT raw FROM records WHERE pos = 20").fetchone()[0]
    rec = json.loads(raw)
    assert rec["kind"] == "event"
    edited = raw.replace(json.dumps(rec["args"][0]).encode(), b'"/harmless"', 1)
    assert edited != raw
    conn.execute("UPDATE records SET raw = ? WHERE pos = 20", (edited,))
    report, p = first(store)
    assert (p.pos, p.kind) == (20, "changed")
    assert p.run == rec["run"] and p.seq == rec["seq"]
    assert p.message.startswith(f"record 20 (run {rec['run'][:12]}…, seq {rec['seq']}): content")
    assert "hash does not match" in p.message
    assert report.problem_count == 1


def test_edited_with_recomputed_hash(store):
    # Without the key the attacker can redo the hash, and re-link the next record,
    # but not the MACs.
    conn = db(store)
    prev, raw = conn.execute("SELECT prev_hash, raw FROM records WHERE pos = 9").fetchone()
    raw = raw.replace(b'"v": 1', b'"v": 1, "note": "edited"', 1)
    fake = Sealer(os.urandom(32), b"\0" * 16)
    pos9 = sample_peer_hash(fake, prev, 9, raw)
    conn.execute("UPDATE records SET raw = ?, hash = ? WHERE pos = 9", (raw, pos9))
    conn.execute("UPDATE records SET prev_hash = ? WHERE pos = 10", (pos9,))
    _, p = first(store)
    assert (p.pos, p.kind) == (9, "changed")
    assert "MAC does not verify" in p.message


def sample_peer_hash(sealer, prev, pos, raw):
    from _store_records import DEFAULT_PEER

    return sealer.record_hash(prev, pos, DEFAULT_PEER, raw)


def test_edited_peer_credentials(store):
    db(store).execute("UPDATE records SET peer_uid = 0 WHERE pos = 33")
    _, p = first(store)
    assert (p.pos, p.kind) == (33, "changed")


def test_deleted_record(store):
    db(store).execute("DELETE FROM records WHERE pos = 25")
    report, p = first(store)
    assert (p.pos, p.kind) == (25, "missing")
    assert p.message == "record 25 missing: removed (1 record(s))"
    assert report.problem_count == 1


def test_deleted_records_renumbered(store):
    conn = db(store)
    conn.execute("DELETE FROM records WHERE pos IN (25, 26)")
    conn.execute("UPDATE records SET pos = pos - 2 WHERE pos > 26")
    conn.execute("UPDATE seals SET pos = pos")  # the attacker cannot re-seal
    report, p = first(store)
    assert (p.pos, p.kind) == (25, "missing")
    assert "records 25-26 missing" in p.message and "renumbered" in p.message
    # Later records are recognised as shifted, not reported one by one; the head
    # seal then fits the original numbering.
    assert report.problem_count == 1, report.problems


def test_inserted_forged_record(store):
    conn = db(store)
    conn.execute("UPDATE records SET pos = -pos WHERE pos >= 12")
    conn.execute("UPDATE records SET pos = 1 - pos WHERE pos < 0")  # shifted up by one
    prev, raw = conn.execute("SELECT prev_hash, raw FROM records WHERE pos = 13").fetchone()
    fake = raw.replace(b'"seq": ', b'"seq": 1', 1)
    forged = Sealer(os.urandom(32), b"\0" * 16)
    h = forged.record_hash(prev, 12, None, fake)
    conn.execute(
        "INSERT INTO records (pos, run, raw, prev_hash, hash, mac) VALUES (12, 'x', ?, ?, ?, ?)",
        (fake, prev, h, forged.record_mac(h)),
    )
    report, p = first(store)
    assert (p.pos, p.kind) == (12, "inserted")
    assert "not sealed with this store's key" in p.message
    assert report.problem_count == 1, report.problems


def test_inserted_copy_of_genuine_record(store):
    conn = db(store)
    conn.execute("UPDATE records SET pos = -pos WHERE pos >= 30")
    conn.execute("UPDATE records SET pos = 1 - pos WHERE pos < 0")
    conn.execute(
        "INSERT INTO records SELECT 30, run, seq, ts, kind, event, pid, alert, peer_uid,"
        " peer_gid, peer_pid, raw, prev_hash, hash, mac FROM records WHERE pos = 5"
    )
    _, p = first(store)
    assert (p.pos, p.kind) == (30, "inserted")
    assert "a copy of record 5" in p.message


def test_swapped_records(store):
    conn = db(store)
    cols = (
        "run, seq, ts, kind, event, pid, alert, peer_uid, peer_gid, peer_pid, raw, prev_hash,"
        " hash, mac"
    )
    a = conn.execute(f"SELECT {cols} FROM records WHERE pos = 15").fetchone()
    b = conn.execute(f"SELECT {cols} FROM records WHERE pos = 40").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE records SET {sets} WHERE pos = 15", b)
    conn.execute(f"UPDATE records SET {sets} WHERE pos = 40", a)
    report, p = first(store)
    assert (p.pos, p.kind) == (15, "moved")
    assert "sealed as record 40" in p.message
    assert [(q.pos, q.kind) for q in report.problems] == [(15, "moved"), (40, "moved")]


def test_swapped_neighbours(store):
    conn = db(store)
    conn.execute("UPDATE records SET pos = -1 WHERE pos = 7")
    conn.execute("UPDATE records SET pos = 7 WHERE pos = 8")
    conn.execute("UPDATE records SET pos = 8 WHERE pos = -1")
    _, p = first(store)
    assert (p.pos, p.kind) == (7, "moved") and "sealed as record 8" in p.message


def test_truncated_tail(store):
    n = n_records()
    db(store).execute("DELETE FROM records WHERE pos > ?", (n - 3,))
    report, p = first(store)
    assert (p.pos, p.kind) == (n - 2, "truncated")
    assert f"sealed up to record {n}" in p.message and "3 record(s) removed" in p.message
    assert report.problem_count == 1


def test_everything_deleted(store):
    db(store).execute("DELETE FROM records")
    _, p = first(store)
    assert (p.pos, p.kind) == (1, "truncated")


def test_head_seal_edited_or_removed(store):
    conn = db(store)
    conn.execute("UPDATE seals SET pos = pos - 1")
    _, p = first(store)
    assert p.kind == "seal" and "does not verify" in p.message
    conn.execute("DELETE FROM seals")
    _, p = first(store)
    assert p.kind == "seal" and "missing" in p.message


def test_appended_without_key(store):
    n = n_records()
    conn = db(store)
    prev = conn.execute("SELECT hash FROM records WHERE pos = ?", (n,)).fetchone()[0]
    raw, _, _ = sample_items()[3]
    forged = Sealer(os.urandom(32), b"\0" * 16)
    h = forged.record_hash(prev, n + 1, None, raw)
    conn.execute(
        "INSERT INTO records (pos, raw, prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?)",
        (n + 1, raw, prev, h, forged.record_mac(h)),
    )
    report, p = first(store)
    assert (p.pos, p.kind) == (n + 1, "forged")
    assert report.problems[-1].kind == "beyond-head"


def test_replaced_key(store):
    os.unlink(store + ".key")
    fd = os.open(store + ".key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    report, p = first(store)
    assert p.kind == "key" and p.message.startswith("key does not match this store")
    assert report.problem_count == 1  # not "record 1 changed", and not N problems


def test_key_file_checks(store, tmp_path):
    os.chmod(store + ".key", 0o640)
    with pytest.raises(StoreError, match="chmod 600"):
        verify(store)
    with pytest.raises(StoreError, match="does not exist"):
        verify(store, str(tmp_path / "nope.key"))
    with pytest.raises(StoreError, match="no store at"):
        verify(str(tmp_path / "nope.sqlite"))


def test_changed_store_id(store):
    db(store).execute("UPDATE meta SET value = ? WHERE key = 'store_id'", ("00" * 16,))
    report, p = first(store)
    assert (p.pos, p.kind) == (1, "changed") and "genesis" in p.message
    assert "meta" in [q.kind for q in report.problems]


def test_verify_does_not_write(store):
    before = os.stat(store).st_mtime_ns, os.path.getsize(store)
    verify(store)
    assert (os.stat(store).st_mtime_ns, os.path.getsize(store)) == before


def test_edited_index_columns(store):
    # Columns are not sealed, but they decide what queries find: verify compares them.
    if _LAYOUT[store] == "rows":
        db(store).execute("UPDATE records SET event = 'import' WHERE event = 'os.system'")
        report, p = first(store)
        assert p.kind == "columns" and "do not match the sealed raw line" in p.message
        assert report.problem_count == 2 * BATCHES  # the event and the alert naming it
    else:
        conn = sqlite3.connect(store, isolation_level=None)
        n = conn.execute(
            "UPDATE chunks SET events = replace(events, ?, ?)", ("\nos.system\n", "\n")
        ).rowcount
        assert n == BATCHES
        report, p = first(store)
        assert p.kind == "columns" and "do not match its sealed records" in p.message
        assert report.problem_count == BATCHES
    assert verify(store, columns=False).ok


def test_verify_while_collector_appends(store):
    # Rows and head seal must come from one snapshot, or a batch landing between
    # reading them would look like truncation.
    import threading

    stop = threading.Event()

    def writer():
        with Store.open(store) as st:
            while not stop.is_set():
                st.append_many(sample_items()[:5])

    t = threading.Thread(target=writer)
    t.start()
    try:
        reports = [verify(store) for _ in range(15)]
    finally:
        stop.set()
        t.join()
    assert all(r.ok for r in reports), [r.first for r in reports if not r.ok]
    assert verify(store).ok


def test_raw_retyped_as_text(store):
    # SQLite happily turns the BLOB into TEXT; verify must report, not crash.
    db(store).execute("UPDATE records SET raw = CAST(raw AS TEXT) || ' ' WHERE pos = 4")
    _, p = first(store)
    assert (p.pos, p.kind) == (4, "changed")


def test_intact_chunks_are_checked_in_one_piece(tmp_path, monkeypatch):
    # A clean chunk store verifies without looking at any record on its own: the
    # native fast path recomputes each chunk's whole seal and its search columns.
    verify_module = importlib.import_module("auditwatch.store.verify")  # not the function

    path = str(tmp_path / "store.sqlite")
    with Store.open(path) as st:
        for _ in range(BATCHES):
            st.append_many(sample_items())

    def refuse(self, chunk):
        raise AssertionError("a record was checked on its own")

    monkeypatch.setattr(verify_module._Checker, "_chunk_records", refuse)
    report = verify_store(path)
    assert report.ok and report.records == n_records()


def test_fast_column_check_agrees_with_parsing_every_record():
    from auditwatch.store.chunks import Summary
    from auditwatch.store.rows import parse_record
    from auditwatch.store.verify import _finding

    rng = random.Random(11)
    lines = [raw for raw, _, _ in sample_items()]
    for i in range(40):  # plain events of a few runs, with numbers of every kind
        run = rng.choice(["a" * 32, "b" * 32, "é" * 4])
        ts = rng.choice([i, -i, 2**63 - 1, -(2**63), 1.5, "t", None])
        event = rng.choice(["open", "import", "ev\udc80", "x\\u0041", 7])
        body = {"v": 1, "run": run, "seq": i + 1, "pid": 5, "kind": "event", "event": event}
        body["ts"] = ts
        lines.append(json.dumps(body).encode())
    lines += [b"{not json", b"[1, 2]", b'{"kind": "alert", "rule": "r", "run": "z"}']

    def in_sequence(n: int) -> list[bytes]:  # what scan_lines takes as one run
        base = {"v": 1, "run": "c" * 32, "pid": 5, "kind": "event"}
        return [
            json.dumps({**base, "seq": i + 1, "ts": rng.randrange(10**9), "event": f"e{i % 11}"})
            .replace(" ", "")
            .encode()
            for i in range(n)
        ]

    for _ in range(300):
        group = rng.sample(lines, rng.randrange(1, 12))
        at = rng.randrange(len(group) + 1)
        group[at:at] = in_sequence(rng.randrange(0, 30))
        want = Summary()
        for line in group:
            rec = parse_record(line) or {}
            want.add(rec.get("run"), rec.get("ts"), rec.get("kind"), rec.get("event"))
        assert _finding(b"".join(line + b"\n" for line in group)) == want.finding(), group


def test_chunk_seal_retyped_is_reported_not_fatal(tmp_path):
    # Whatever a chunk's seal column was turned into, verify names the chunk.
    path = str(tmp_path / "store.sqlite")
    with Store.open(path) as st:
        st.append_many(sample_items())
    for value in (7, "text", None):
        conn = sqlite3.connect(path, isolation_level=None)
        if value is None:
            conn.execute("PRAGMA ignore_check_constraints = 1")
            conn.execute("UPDATE chunks SET seal = x'' WHERE first_pos = 1")
        else:
            conn.execute("UPDATE chunks SET seal = ? WHERE first_pos = 1", (value,))
        conn.close()
        _, p = first(path)
        assert (p.pos, p.kind) == (1, "changed") and "packing damaged" in p.message
