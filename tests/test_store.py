"""The sealed SQLite store: layout, sealing, keys, runs summary, migrations, export, query."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import sqlite3
import stat

import pytest

import _layout
from _store_records import RUNS, T0, encode, sample_items
from auditwatch.store import (
    PeerCred,
    Store,
    StoreError,
    StoreTampered,
    parse_time,
    query,
    schema,
    verify,
)
from auditwatch.store.export import export_jsonl
from auditwatch.store.query import descendants
from auditwatch.store.rows import iter_rows
from auditwatch.store.seal import Sealer, link_bytes


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store.sqlite")


@pytest.fixture
def filled(path):
    with Store.open(path) as st:
        st.append_many(sample_items())
    return path


def test_new_store_layout_and_private_files(path):
    with Store.open(path) as st:
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema.user_version(st.conn) == schema.CURRENT_VERSION
        assert st.meta["format"] == "auditwatch-store"
        assert st.meta["schema_version"] == str(schema.CURRENT_VERSION)
    for p in (path, path + ".key"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert os.path.getsize(path + ".key") == 32


def test_append_stores_raw_columns_and_seals(path):
    items = sample_items()
    with Store.open(path) as st:
        assert st.append_many(items) == len(items)
        assert st.append_many([]) == 0
        rows = list(iter_rows(st.conn))
        sealer = st._sealer
    assert [r[0] for r in rows] == list(range(1, len(items) + 1))
    prev = sealer.genesis
    for row, (raw, rec, peer) in zip(rows, items):
        pos, run, seq, ts, kind, event, pid, alert, sraw, uid, gid, ppid, sprev, h, mac = row
        assert sraw == raw  # exactly as received
        assert (run, seq, ts, kind, event, pid) == tuple(
            rec.get(k) for k in ("run", "seq", "ts", "kind", "event", "pid")
        )
        assert (alert is not None) == (kind == "alert")
        assert (uid, gid, ppid) == (peer.uid, peer.gid, peer.pid)
        # The chain as docs/store.md defines it, computed independently.
        expect = hashlib.sha256(
            b"auditwatch/record/v1\x00" + prev + link_bytes(pos, peer, len(raw)) + raw
        ).digest()
        assert sprev == prev and h == expect
        assert mac == hmac.new(_key(path), b"auditwatch/record-mac/v1\x00" + h, "sha256").digest()
        prev = h
    alert_rows = [r for r in rows if r[7] is not None]
    assert [r[7] for r in alert_rows] == ["shell-pipe-download"]


def _key(path):
    with open(path + ".key", "rb") as f:
        return f.read()


def test_hmac_shortcut_matches_hmac_module():
    key = os.urandom(32)
    sealer = Sealer(key, b"s" * 16)
    digest = hashlib.sha256(b"x").digest()
    want = hmac.new(key, b"auditwatch/record-mac/v1\x00" + digest, "sha256").digest()
    assert sealer.record_mac(digest) == want


def test_batches_chain_and_head_seal(path):
    with Store.open(path) as st:
        st.append_many(sample_items()[:5])
        st.append_many(sample_items(peer=None)[5:])
        n = st.count()
        pos, h = st.conn.execute("SELECT pos, hash FROM seals").fetchone()
        assert pos == n == st.last_pos()
        assert h == list(iter_rows(st.conn))[-1].hash
    assert verify(path).ok


def test_failed_batch_rolls_back(filled):
    with Store.open(filled) as st:
        before = st.count()
        bad = [*sample_items()[:3], (b"{}", None, None)]  # not a dict: fails mid-batch
        with pytest.raises(AttributeError):
            st.append_many(bad)
        assert st.count() == before
        st.append_many(sample_items()[:2])  # the store is still usable
    assert verify(filled).ok


def test_writer_refuses_tampered_tail(filled):
    # Chaining onto a truncated store would re-seal it and hide the truncation.
    _layout.explode(filled)
    conn = sqlite3.connect(filled, isolation_level=None)
    conn.execute("DELETE FROM records WHERE pos = (SELECT max(pos) FROM records)")
    conn.close()
    _layout.repack(filled)
    with Store.open(filled) as st, pytest.raises(StoreTampered, match="sealed head"):
        st.append_many(sample_items()[:1])
    assert verify(filled).first.kind == "truncated"


def test_runs_summary(filled):
    with Store.open(filled, readonly=True) as st:
        rows = {
            r[0]: r[1:]
            for r in st.conn.execute(
                "SELECT run, parent_run, argv, exit_status, records, events, alerts, start_ts"
                " FROM runs"
            )
        }
    parent = rows[RUNS["parent"]]
    assert parent[0] is None
    assert json.loads(parent[1]) == ["python", "-m", "pip", "install", "./pkg"]
    assert json.loads(parent[2]) == {"how": "exit", "code": 0}
    assert parent[3:6] == (6, 4, 0) and parent[6] == T0
    child = rows[RUNS["child"]]
    assert child[0] == RUNS["parent"] and json.loads(child[2])["code"] == 1
    assert child[3:6] == (6, 3, 1)  # start, 3 events, exit, the alert
    grandchild = rows[RUNS["grandchild"]]
    assert grandchild[0] == RUNS["child"] and grandchild[2] is None  # no exit record


def test_writer_refuses_exposed_key(filled):
    os.chmod(filled + ".key", 0o644)
    with pytest.raises(StoreError) as err:
        Store.open(filled)
    msg = str(err.value)
    assert filled + ".key" in msg and "chmod 600" in msg


def test_writer_refuses_other_key_and_missing_key(filled, tmp_path):
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    with pytest.raises(StoreError, match="does not match store"):
        Store.open(filled, key_path=str(other))
    os.unlink(filled + ".key")
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(filled)


def test_key_path_configurable(tmp_path):
    key = str(tmp_path / "keys" / "collector.key")
    os.mkdir(tmp_path / "keys")
    with Store.open(str(tmp_path / "s.sqlite"), key_path=key) as st:
        st.append_many(sample_items())
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert not os.path.exists(str(tmp_path / "s.sqlite.key"))
    assert verify(str(tmp_path / "s.sqlite"), key).ok


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not"):
        Store.open(str(junk), readonly=True)
    with pytest.raises(StoreError, match=r"junk\.sqlite"):
        Store.open(str(junk))
    other = tmp_path / "other.sqlite"
    sqlite3.connect(str(other)).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not an auditwatch store"):
        Store.open(str(other))
    with pytest.raises(StoreError, match="no store at"):
        Store.open(str(tmp_path / "missing.sqlite"), readonly=True)


def test_run_directory_and_readonly_without_key(filled, tmp_path):
    os.unlink(filled + ".key")  # readers never need the key
    with Store.open(str(tmp_path), readonly=True) as st:
        assert st.count() == len(sample_items())
        with pytest.raises(StoreError, match="read-only"):
            st.append_many(sample_items())


def test_migrates_old_version_store(filled):
    # A version-1 store: what the first release wrote, a row per record and no runs.
    _layout.explode(filled)
    conn = sqlite3.connect(filled, isolation_level=None)
    conn.execute("DROP TABLE runs")
    conn.execute("DROP TABLE chunks")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with Store.open(filled, readonly=True) as st:  # readers migrate a writable store
        assert schema.user_version(st.conn) == schema.CURRENT_VERSION
        assert st.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
        row = st.conn.execute(
            "SELECT parent_run, records, alerts FROM runs WHERE run = ?", (RUNS["child"],)
        ).fetchone()
        assert row == (RUNS["parent"], 6, 1)
    assert verify(filled).ok  # the seals do not cover derived tables


def test_old_rows_and_new_chunks_are_one_chain(filled):
    # A store from before chunks keeps its rows; new records chain on in chunks,
    # and every reader sees both as one sequence of positions.
    _layout.explode(filled)
    with Store.open(filled) as st:
        old = st.count()
        assert st.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
        st.append_many(sample_items())
        new = st.count() - old
        assert new == len(sample_items())
        assert st.conn.execute("SELECT count(*) FROM records").fetchone()[0] == old
        assert [r.pos for r in iter_rows(st.conn)] == list(range(1, old + new + 1))
        assert [r.pos for r in iter_rows(st.conn, reverse=True)][:2] == [old + new, old + new - 1]
        systems = [r.pos for r in query(st, events=["os.system"])]
        assert len(systems) == 4 and systems[1] <= old < systems[2]
        child = st.conn.execute("SELECT records FROM runs WHERE run = ?", (RUNS["child"],))
        assert child.fetchone()[0] == 2 * 6
    report = verify(filled)
    assert report.ok and report.records == old + new


def test_migration_steps_apply_in_order(path):
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema.migrate(conn, upto=1) == 1
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {
        "meta",
        "records",
        "seals",
    }
    assert schema.migrate(conn) == schema.CURRENT_VERSION
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        schema.CURRENT_VERSION
    )


def test_refuses_newer_store(filled):
    conn = sqlite3.connect(filled, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {schema.CURRENT_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this auditwatch"):
        Store.open(filled)


def test_export_round_trips_bytes(path):
    items = sample_items()
    # Lines fed in as a JSON-lines file, some with odd spacing and escapes.
    odd = {**items[1][1], "args": ["caf\u00e9", "\\u00e9"]}
    raws = [raw + b"\n" for raw, _, _ in items] + [
        json.dumps(odd).encode() + b"\n",
        encode(items[2][1]).replace(b", ", b",") + b"\n",
    ]
    recs = [json.loads(r) for r in raws]
    with Store.open(path) as st:
        st.append_many((r, rec, None) for r, rec in zip(raws, recs))
        out = io.BytesIO()
        assert export_jsonl(st, out) == len(raws)
        assert out.getvalue() == b"".join(raws)
        out = io.BytesIO()
        export_jsonl(st, out, [RUNS["child"]])
        want = [r for r, rec in zip(raws, recs) if rec["run"] == RUNS["child"]]
        assert out.getvalue() == b"".join(want)


def test_export_adds_newline_only_when_missing(path):
    items = sample_items()[:3]
    with Store.open(path) as st:
        st.append_many(items)
        out = io.BytesIO()
        export_jsonl(st, out)
    assert out.getvalue() == b"".join(raw + b"\n" for raw, _, _ in items)


def _q(path, **kw):
    with Store.open(path, readonly=True) as st:
        return list(query(st, **kw))


@pytest.fixture(params=["chunks", "rows"])
def filled_layouts(filled, request):
    """The filled store as written (chunks), and as a store before version 3 holds
    it (a row per record): each layout narrows in SQL its own way."""
    if request.param == "rows":
        _layout.explode(filled)
    return filled


def test_query_filters(filled_layouts):
    filled = filled_layouts
    every = _q(filled)
    assert [r.pos for r in every] == list(range(1, len(every) + 1))
    assert {r.run for r in _q(filled, runs=[RUNS["other"]])} == {RUNS["other"]}
    tree = {r.run for r in _q(filled, tree=[RUNS["child"]])}
    assert tree == {RUNS["child"], RUNS["grandchild"]}
    assert {r.event for r in _q(filled, events=["open"])} == {"open"}
    assert {r.event for r in _q(filled, events=["sub*", "os.*"])} == {
        "subprocess.Popen",
        "os.system",
    }
    assert {r.event for r in _q(filled, events=["socket.[!x]*"])} == {"socket.connect"}
    hits = _q(filled, contains="/etc/passwd")
    assert [r.record()["args"][0] for r in hits] == ["/etc/passwd"]
    assert len(_q(filled, contains="caf\u00e9")) == 1
    assert len(_q(filled, contains='passwd"')) == 1  # over the args JSON text
    assert {r.event for r in _q(filled, regex=r"curl .*\| *sh")} == {"os.system"}
    assert [r.kind for r in _q(filled, alerts=True)] == ["alert"]
    assert len(_q(filled, limit=3)) == 3
    assert len(_q(filled, contains="/", limit=2)) == 2
    assert _q(filled, limit=0) == []
    window = _q(filled, since=T0 + 10_000_000, until=T0 + 20_000_000)
    assert window and all(T0 + 10_000_000 <= r.ts <= T0 + 20_000_000 for r in window)
    both = _q(filled, tree=[RUNS["parent"]], events=["open"], since=T0 + 10_000_000)
    assert {r.run for r in both} == {RUNS["child"], RUNS["grandchild"]}


def test_descendants_and_run_prefix(filled):
    with Store.open(filled, readonly=True) as st:
        assert descendants(st, [RUNS["parent"]]) == [
            RUNS["parent"],
            RUNS["child"],
            RUNS["grandchild"],
        ]
        assert st.resolve_run(RUNS["child"][:31].upper()) == RUNS["child"]
        with pytest.raises(StoreError, match="ambiguous"):
            st.resolve_run("0000")
        with pytest.raises(StoreError, match="no run"):
            st.resolve_run("ffff")
        with pytest.raises(StoreError, match="hexadecimal"):
            st.resolve_run("xyz%")


def test_parse_time():
    assert parse_time("1700000000") == T0
    assert parse_time("1700000000.5") == T0 + 500_000_000
    assert parse_time("1700000000.000000001") == T0 + 1
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-14T22:13:20+00:00") == T0
    assert parse_time("2023-11-14T23:13:20.25+01:00") == T0 + 250_000_000
    assert parse_time("2023-11-14 22:13:20.000000001z") == T0 + 1
    assert parse_time("2023-11-14T21:13:20-0100") == T0
    local = parse_time("2023-11-14")
    assert abs(local - (T0 - 80_000 * 1_000_000_000)) <= 86_400 * 1_000_000_000
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("2023-13-40")


def test_peer_creds_optional(path):
    with Store.open(path) as st:
        st.append_many([(raw, rec, None) for raw, rec, _ in sample_items()[:2]])
        st.append(*sample_items()[2][:2], PeerCred(pid=1, uid=0, gid=0))
        assert [(r.uid, r.ppid) for r in iter_rows(st.conn)] == [
            (None, None),
            (None, None),
            (0, 1),
        ]
    assert verify(path).ok


def test_hostile_fields_do_not_stop_the_writer(path):
    # An audited process controls its records' content; no value may make the store
    # refuse a batch. Awkward values are cleaned in the indexed columns only.
    items = sample_items()[:3]
    weird = [
        {**items[1][1], "event": "open\udc80", "seq": 2**70},
        {**items[1][1], "event": ["not", "a", "name"], "pid": "12"},
        {**items[1][1], "ts": float("nan"), "run": 7},
    ]
    raws = [json.dumps(r).encode() for r in weird]
    with Store.open(path) as st:
        st.append_many(items[:1])
        assert st.append_many(iter(zip(raws, weird, [None] * 3))) == 3
        rows = [(r.event, r.seq, r.pid, r.run) for r in iter_rows(st.conn, after=1)]
        out = io.BytesIO()
        export_jsonl(st, out)
    assert rows[0][:2] == ("open\\udc80", None)
    assert rows[1][0] is None and rows[1][2] == "12"
    assert rows[2][3] == 7
    assert out.getvalue() == items[0][0] + b"\n" + b"".join(r + b"\n" for r in raws)
    assert verify(path).ok


def test_batch_work_does_not_grow_with_the_store(path):
    # Appending a batch (chunks, runs summary, head seal) must cost the same whether
    # the store holds little or much: SQLite's VM steps, counted, show it.
    def steps_to_append(st):
        count = [0]

        def tick():
            count[0] += 1
            return 0

        st.conn.set_progress_handler(tick, 100)
        st.append_many(sample_items())
        st.conn.set_progress_handler(None, 100)
        return count[0]

    with Store.open(path) as st:
        small = steps_to_append(st)
        for _ in range(300):
            st.append_many(sample_items())
        large = steps_to_append(st)
    assert large <= small * 1.5 + 5, (small, large)


def test_peer_credentials_duck_typed(path):
    # The collector has its own credentials type; anything with pid/uid/gid works.
    class Creds:
        def __init__(self, pid, uid, gid):
            self.pid, self.uid, self.gid = pid, uid, gid

    with Store.open(path) as st:
        st.append_many([(raw, rec, Creds(77, 1001, 1002)) for raw, rec, _ in sample_items()])
        row = next((r.ppid, r.uid, r.gid) for r in iter_rows(st.conn))
    assert row == (77, 1001, 1002)
    assert verify(path).ok


@pytest.mark.parametrize("threaded", [True, False])
def test_store_sink_keeps_what_the_store_refuses(path, threaded):
    # A batch the store will not take (here: another writer appended meanwhile, so
    # the store no longer ends where this writer chains on) is kept in a JSON-lines
    # file beside the store and reported; so is a record the writer cannot seal.
    from auditwatch.collector.storesink import StoreSink

    logs: list[str] = []
    st = Store.open(path)
    sink = StoreSink(st, batch=4, threaded=threaded, log=logs.append)
    with Store.open(path) as other:
        other.append_many(sample_items()[:1])
    items = sample_items()[:6]
    for raw, rec, peer in items:
        sink.accept(raw, rec, peer)
    sink.flush()
    sink.accept(b"{}", None, None)  # type: ignore[arg-type]  # not a parsed record
    sink.close()
    st.close()
    with open(f"{path}.unstored-{os.getpid()}.jsonl", "rb") as f:
        kept = f.read().splitlines()
    assert kept == [raw for raw, _, _ in items] + [b"{}"]
    assert sink.failed == 7 and sink.stored == 0
    assert len(logs) == 3 and all("cannot store" in line for line in logs)
