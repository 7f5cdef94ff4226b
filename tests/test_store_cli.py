"""The store commands: verify, export, runs, query (run through click, in process)."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

import _layout
from _store_records import RUNS, T0, sample_items
from auditwatch.commands import export, query, runs, verify
from auditwatch.store import Store


@pytest.fixture
def rundir(tmp_path):
    """A run directory as `auditwatch run` writes it: store.sqlite and its key."""
    with Store.open(str(tmp_path / "store.sqlite")) as st:
        st.append_many(sample_items())
    return tmp_path


@pytest.fixture
def store(rundir):
    return str(rundir / "store.sqlite")


def invoke(cmd, *args):
    return CliRunner().invoke(cmd.command, [str(a) for a in args], catch_exceptions=False)


def test_verify_intact(rundir, store):
    for target in (rundir, store):
        res = invoke(verify, target)
        assert res.exit_code == 0, res.output
        assert "intact" in res.output and f"{len(sample_items())} records" in res.output


def test_verify_tampered_names_first_record(store):
    _layout.explode(store)
    conn = sqlite3.connect(store, isolation_level=None)
    raw = conn.execute("SELECT raw FROM records WHERE pos = 6").fetchone()[0]
    conn.execute("UPDATE records SET raw = ? WHERE pos = 6", (raw.replace(b'"v": 1', b'"v": 1 '),))
    conn.execute("DELETE FROM records WHERE pos = 9")
    _layout.repack(store)
    res = invoke(verify, store)
    assert res.exit_code == 1
    rec = json.loads(raw)
    assert f"record 6 (run {rec['run'][:12]}…, seq {rec['seq']}): content changed" in res.output
    assert "2 problems in all" in res.output
    res = invoke(verify, store, "-v")
    assert "record 9 missing" in res.output


def test_verify_wrong_key_and_bad_input(store, tmp_path):
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    res = invoke(verify, store, "--key", other)
    assert res.exit_code == 1 and "key does not match this store" in res.output
    other.chmod(0o644)
    res = invoke(verify, store, "--key", other)
    assert res.exit_code == 2 and str(other) in res.output and "chmod 600" in res.output
    res = invoke(verify, tmp_path / "nowhere")
    assert res.exit_code == 2 and "no store at" in res.output and "nowhere" in res.output


def test_export_byte_identical(store, tmp_path):
    want = b"".join(raw + b"\n" for raw, _, _ in sample_items())
    res = CliRunner().invoke(export.command, [store, "--format", "jsonl"])
    assert res.exit_code == 0 and res.stdout_bytes == want
    out = tmp_path / "out.jsonl"
    res = invoke(export, store, "-o", out, "--run", RUNS["other"][:31])
    assert res.exit_code == 0
    assert out.read_bytes() == b"".join(
        raw + b"\n" for raw, rec, _ in sample_items() if rec["run"] == RUNS["other"]
    )


def test_export_errors(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("hello")
    res = invoke(export, junk)
    assert res.exit_code == 1 and "junk" in res.output and "not" in res.output


def test_runs_plain_table(store):
    res = invoke(runs, store)  # CliRunner's stdout is not a terminal: plain text
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == [
        "RUN",
        "COMMAND",
        "START",
        "DURATION",
        "EXIT",
        "PROCS",
        "EVENTS",
        "ALERTS",
    ]
    assert len(lines) == 5
    # The sample run ids share their first digits; find the rows by command.
    by_cmd = {
        next(c for c in ("pip", "setup.py", "-c", "other.py") if c in line): line
        for line in lines[1:]
    }
    pip = by_cmd["pip"].split()
    assert pip[-4:] == ["0", "3", "4", "0"]  # exit 0, 3 processes in its tree, 4 events
    assert by_cmd["setup.py"].split()[-4:] == ["1", "2", "3", "1"]
    assert by_cmd["-c"].split()[-4:] == ["missing", "1", "1", "0"]
    assert by_cmd["setup.py"].index("python3") > by_cmd["pip"].index("python")  # indented


def test_query_filters_and_json(rundir, store):
    res = invoke(query, rundir, "--event", "open", "--json")
    assert res.exit_code == 0
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert recs and {r["event"] for r in recs} == {"open"}
    res = invoke(query, store, "--contains", "/etc/passwd")
    assert res.exit_code == 0 and res.output.count("\n") == 1 and "open" in res.output
    res = invoke(query, store, "--tree", RUNS["child"], "--regex", r"10\.0\.0\.\d+")
    assert res.output.count("\n") == 1 and "socket.connect" in res.output
    res = invoke(query, store, "--alerts")
    assert "ALERT shell-pipe-download" in res.output
    res = invoke(query, store, "--since", T0 / 1e9 + 0.0105, "--until", "2023-11-14T22:13:20.0205Z")
    assert res.exit_code == 0 and res.output.count("\n") >= 1
    res = invoke(query, store, "--limit", 2)
    assert res.output.count("\n") == 2 and "start" in res.output


def test_query_bad_input(store, tmp_path):
    res = invoke(query, store, "--since", "last tuesday")
    assert res.exit_code == 2 and "--since" in res.output and "ISO 8601" in res.output
    res = invoke(query, store, "--regex", "([")
    assert res.exit_code == 2 and "--regex" in res.output
    res = invoke(query, store, "--run", "0000")
    assert res.exit_code == 1 and "ambiguous" in res.output
    res = invoke(query, tmp_path / "empty-dir-without-store")
    assert res.exit_code == 1 and "no store at" in res.output
