"""Every piece of code that ran is on record with where it came from."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest

from auditwatch.collector.codestore import CodeStore, decode_text
from collector_helpers import wait_for
from helpers import (
    Audited,
    arg_text,
    audit_env,
    launcher_path,
    read_records,
    run_audited,
    run_launched,
    running_audited,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(tmp_path: Path, a: Audited) -> tuple[CodeStore, dict]:
    cs = CodeStore(tmp_path / "codes")
    for r in a.records:
        cs.accept(b"", r, None)
    return cs, cs.finish()


def opened(a: Audited) -> dict[str, dict]:
    return {arg_text(r["args"][0]): r for r in a.events("auditwatch.open_code")}


def texts(a: Audited) -> dict[str, dict]:
    """The first auditwatch.code record of each text (later ones carry no text)."""
    first: dict[str, dict] = {}
    for r in a.events("auditwatch.code"):
        first.setdefault(r["args"][0], r)
    return first


@pytest.fixture
def pth_file():
    """A .pth file in this environment's site-packages that runs code at start-up."""
    path = Path(sysconfig.get_path("purelib")) / "zz_auditwatch_test_provenance.pth"
    line = "import os; os.environ['AW_PTH_RAN'] = 'yes'\n"
    path.write_text(line)
    yield path, line
    path.unlink()


def test_pth_file_that_runs_code(tmp_path, pth_file):
    path, line = pth_file
    a = run_launched(tmp_path, "-c", "import os; print(os.environ.get('AW_PTH_RAN'))")
    assert a.proc.stdout == "yes\n"
    rec = opened(a)[str(path)]
    assert rec["args"][1:] == [len(line), sha(line.encode())]
    # the line site executed (with its newline before 3.13): text and hash, stored
    executed = next(t for t in (line, line.rstrip("\n")) if sha(t.encode()) in texts(a))
    code = texts(a)[sha(executed.encode())]
    assert decode_text(code["args"][3]) == (executed.encode(), False)
    cs, prov = store(tmp_path, a)
    assert (cs.directory / sha(executed.encode())).read_text() == executed
    assert any(f["path"] == str(path) for f in prov["files"])


def test_module_imported_from_a_zip(tmp_path):
    source = "VALUE = 'from the zip'\n"
    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zmod.py", source)
    code = f"import sys; sys.path.insert(0, {str(archive)!r}); import zmod; print(zmod.VALUE)"
    a = run_launched(tmp_path, "-B", "-c", code)
    assert a.proc.stdout == "from the zip\n"
    rec = opened(a)[str(archive)]
    assert rec["args"][2] == sha(archive.read_bytes())
    assert decode_text(texts(a)[sha(source.encode())]["args"][3]) == (source.encode(), False)
    cs, prov = store(tmp_path, a)
    (item,) = [e for e in prov["executed"] if e["file"] == str(archive / "zmod.py")]
    assert item["origin"] == "zip" and item["archive_sha256"] == sha(archive.read_bytes())
    assert (cs.directory / sha(source.encode())).read_text() == source


class Serve(http.server.BaseHTTPRequestHandler):
    body = b"import sys\nDOWNLOADED = 6 * 7\nprint('ran', DOWNLOADED)\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_string_downloaded_and_executed(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), Serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/payload"
        code = f"import urllib.request; exec(urllib.request.urlopen({url!r}).read())"
        a = run_launched(tmp_path, "-c", code)
    finally:
        server.shutdown()
    assert a.proc.stdout == "ran 42\n"
    digest = sha(Serve.body)
    rec = texts(a)[digest]
    assert rec["args"][1] == len(Serve.body)
    assert rec["args"][3] == {"$": "bytes", "len": len(Serve.body), "text": Serve.body.decode()}
    cs, prov = store(tmp_path, a)
    assert (cs.directory / digest).read_bytes() == Serve.body
    (entry,) = [t for t in prov["texts"] if t["sha256"] == digest]
    assert entry["stored"] and entry["origin"] == "<string>"
    # the -c command itself is on record too
    assert texts(a)[sha(code.encode() + b"\n")]["args"][2] == "-c"


def test_same_text_is_sent_once_per_process(tmp_path):
    a = run_launched(tmp_path, "-c", "for i in range(3): exec('x = 1')")
    recs = [r for r in a.events("auditwatch.code") if r["args"][0] == sha(b"x = 1")]
    assert [r["args"][3] is None for r in recs] == [False, True, True]


def test_code_cap_marks_the_cut(tmp_path):
    big = "x = 1\n" * 5000
    a = run_launched(tmp_path, "-c", f"exec({big!r})", AUDITWATCH_CODE_MAX="1000")
    rec = texts(a)[sha(big.encode())]
    assert rec["args"][3]["trunc"] is True and rec["args"][3]["len"] == len(big)
    _, prov = store(tmp_path, a)
    (entry,) = [t for t in prov["texts"] if t["sha256"] == sha(big.encode())]
    assert not entry["stored"] and "cut" in entry["reason"]


STDIN_SCRIPT = (
    "import os, stat, sys\n"
    "kind = 'fifo' if stat.S_ISFIFO(os.fstat(0).st_mode) else 'file'\n"
    "print(kind, sys.argv[1:], repr(sys.stdin.read()))\n"
)


@pytest.mark.parametrize("launched", [True, False], ids=["launcher", "site"])
@pytest.mark.parametrize("size", ["small", "beyond-a-pipe"])
@pytest.mark.parametrize("how", ["pipe", "file"])
def test_stdin_script_text_is_on_record(tmp_path, launched, size, how):
    # `cmd | python - args` and `python - args < file`: the script is on record with
    # its hash and text, and the program sees exactly what it would have seen (the
    # same script, a pipe stays a pipe, stdin at its end once the script is parsed).
    script = STDIN_SCRIPT if size == "small" else "#" * 100_000 + "\n" + STDIN_SCRIPT
    argv = [str(launcher_path()) if launched else sys.executable, "-", "a", "b"]
    env = audit_env(tmp_path)
    if how == "pipe":
        proc = subprocess.run(argv, env=env, input=script.encode(), capture_output=True)
    else:
        path = tmp_path / "script.py"
        path.write_text(script)
        with open(path, "rb") as f:
            proc = subprocess.run(argv, env=env, stdin=f, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    kind = "fifo" if how == "pipe" else "file"
    assert proc.stdout.decode() == f"{kind} ['a', 'b'] ''\n"
    a = Audited(proc, read_records(tmp_path / "records.jsonl"))
    rec = texts(a)[sha(script.encode())]
    assert rec["args"][1:3] == [len(script), "<stdin>"]
    cs, prov = store(tmp_path, a)
    assert (cs.directory / sha(script.encode())).read_text() == script
    (entry,) = [t for t in prov["texts"] if t["sha256"] == sha(script.encode())]
    assert entry["origin"] == "<stdin>" and entry["stored"]


def test_stdin_script_past_the_capture_cap_still_runs_unchanged(tmp_path):
    # Past the cap (16 MiB by default, 64 KiB here) the text is not captured, and
    # everything read so far is fed back with the rest of the stream, by a thread:
    # the program still gets all of it.
    script = ("#" * 99 + "\n") * 3_000 + STDIN_SCRIPT
    env = audit_env(tmp_path, AUDITWATCH_STDIN_MAX="65536")
    proc = subprocess.run(
        [sys.executable, "-", "x"], env=env, input=script.encode(), capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == "fifo ['x'] ''\n"
    a = Audited(proc, read_records(tmp_path / "records.jsonl"))
    assert not [r for r in a.events("auditwatch.code") if r["args"][2] == "<stdin>"]
    assert a.events("cpython.run_stdin")


def test_hashes_made_off_thread_are_right_and_precede_the_exit(tmp_path):
    # Without a manifest the hash is made on a background thread: every record must
    # still carry the file's true hash and reach the sink before its process's exit
    # record, in a parent and in a forked child that leaves at once.
    code = """\
        import os
        import argparse, csv, decimal, email.message, fractions, json, logging, pickle
        pid = os.fork()
        if pid == 0:
            import statistics, tarfile, xml.etree.ElementTree
            os._exit(0)
        os.waitpid(pid, 0)
        import sqlite3, unittest
    """
    a = run_audited(tmp_path, code)
    records = a.events("auditwatch.open_code")
    assert len(records) > 20
    for r in records:
        path = arg_text(r["args"][0])
        assert r["args"][2] == sha(Path(path).read_bytes()), path
    exits = {r["run"]: r["seq"] for r in a.kinds("exit")}
    assert len(exits) == 2
    for r in records:
        assert r["seq"] < exits[r["run"]]
    child = next(run for run in exits if run != a.kinds("start")[0]["run"])
    assert any("statistics" in arg_text(r["args"][0]) for r in records if r["run"] == child)


def test_exec_records_carry_the_hash_of_the_bytecode(tmp_path):
    # An exec record hashes its code object's bytecode. A large one (a module body;
    # from 64 bytes with the portable rounds, 16 KiB with the SHA extensions) is hashed
    # by the hasher thread when nothing waits for the record; a small one, and any
    # in a subinterpreter, on the thread that runs it. Every way, the hash
    # is the bytecode's; an indicator after the exec comes after its record; and
    # the hasher gives its reference to the bytecode back.
    pytest.importorskip("_testcapi")
    code = """\
        import hashlib, sys, _testcapi, _auditwatch
        large_text = "\\n".join(f"v{i} = {i}" for i in range(5000))
        small = compile("x = 1", "small", "exec")
        large = compile(large_text, "large", "exec")
        refs = sys.getrefcount(large.co_code)
        before = _auditwatch.status()["hashed_off_thread"]
        exec(small, {})
        exec(large, {})
        sys.addaudithook(lambda *a: None)  # an indicator: waits for the hasher
        print(_auditwatch.status()["hashed_off_thread"] - before)
        _testcapi.run_in_subinterp(f"exec(compile({large_text!r}, 'sub', 'exec'), {{}})")
        assert _auditwatch.flush()
        print(sys.getrefcount(large.co_code) - refs, len(small.co_code), len(large.co_code))
        for c in (small, large):
            print(hashlib.sha256(c.co_code).hexdigest())
    """
    a = run_audited(tmp_path, code)
    off_thread, held, small_len, large_len, small_sha, large_sha = a.proc.stdout.split()
    assert int(small_len) < 64 and int(large_len) >= 16 << 10
    assert off_thread == "1", "only the large bytecode of the main interpreter goes off-thread"
    assert held == "0", "the hasher kept its reference to the bytecode"
    execs = {
        r["args"][0]["file"]: r
        for r in a.events("exec")
        if r["args"][0]["file"] in ("small", "large", "sub")
    }
    assert execs["small"]["args"][0]["sha256"] == small_sha
    assert execs["large"]["args"][0]["sha256"] == large_sha
    assert execs["sub"]["args"][0]["sha256"] == large_sha and execs["sub"]["interp"] > 0
    (hooked,) = a.events("sys.addaudithook")
    assert execs["large"]["seq"] < hooked["seq"]


def test_a_file_hashed_off_thread_reaches_the_sink_while_the_program_waits(tmp_path):
    # Between jobs the hasher naps, and a file queued meanwhile does not wake it: it
    # must still come back for it on its own, with nothing flushing or exiting.
    files = [tmp_path / f"big{i}.bin" for i in range(2)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * (256 << 10))
    code = (
        "import io, sys, time\n"
        f"io.open_code({str(files[0])!r}).close()\n"
        "time.sleep(0.0015)\n"  # the hasher is done with the first: napping now
        f"io.open_code({str(files[1])!r}).close()\n"
        "print('queued', flush=True)\n"
        "time.sleep(60)\n"
    )

    def hashed() -> dict[str, str]:
        return {
            arg_text(r["args"][0]): r["args"][2]
            for r in read_records(tmp_path / "records.jsonl")
            if r.get("event") == "auditwatch.open_code"
        }

    with running_audited(tmp_path, code, options="heartbeat=30") as proc:
        assert proc.stdout.readline() == b"queued\n"
        arrived = wait_for(lambda: str(files[1]) in hashed(), timeout=2.0, every=0.01)
        assert arrived, "the second file is still queued"
    assert [hashed()[str(f)] for f in files] == [sha(f.read_bytes()) for f in files]


def test_flush_waits_for_files_still_being_hashed(tmp_path):
    # flush() promises every record so far has left the process: that includes a
    # file read as code whose hash the background thread is still making.
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (16 << 20))
    records = tmp_path / "records.jsonl"
    code = f"""\
        import io, json
        import auditwatch.runtime as r
        io.open_code({str(big)!r}).close()
        assert r.flush()
        with open({str(records)!r}) as f:
            done = [json.loads(line) for line in f]
        print(any(x.get("event") == "auditwatch.open_code" and x["args"][0] == {str(big)!r}
                  for x in done))
    """
    a = run_audited(tmp_path, code)
    assert a.proc.stdout.split() == ["True"]
    (rec,) = [r for r in a.events("auditwatch.open_code") if arg_text(r["args"][0]) == str(big)]
    assert rec["args"][2] == sha(big.read_bytes())


def test_files_read_as_code_are_their_bytes_and_are_let_go(tmp_path):
    # In the main interpreter a regular file is read straight into the bytes Python
    # gets, and the hasher holds a reference to them until the hash is made: what
    # Python reads must be the file, and the references must be given back (flush
    # waits for the hashes and gives them back). A FIFO takes the other path: a
    # growing buffer.
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (32 << 10))
    fifo = tmp_path / "code.fifo"
    code = f"""\
        import io, os, tracemalloc
        import auditwatch.runtime as r
        want = open({str(big)!r}, 'rb').read()
        tracemalloc.start()
        for _ in range(60):
            with io.open_code({str(big)!r}) as f:
                assert f.read() == want
        assert r.flush()
        print(tracemalloc.get_traced_memory()[0] >> 20)
        os.mkfifo({str(fifo)!r})
        if os.fork() == 0:
            with open({str(fifo)!r}, 'wb') as w:
                w.write(b'print(1)' * 10000)
            os._exit(0)
        with io.open_code({str(fifo)!r}) as f:
            print(f.read() == b'print(1)' * 10000)
        os.wait()
    """
    a = run_audited(tmp_path, code)
    held_mib, fifo_ok = a.proc.stdout.split()
    assert fifo_ok == "True"
    assert int(held_mib) < 8, f"{held_mib} MiB still held after flush: the read files are kept"
    records = [r for r in a.events("auditwatch.open_code") if arg_text(r["args"][0]) == str(big)]
    assert len(records) == 60 and {r["args"][2] for r in records} == {sha(big.read_bytes())}
    (f,) = [r for r in a.events("auditwatch.open_code") if arg_text(r["args"][0]) == str(fifo)]
    assert f["args"][1:] == [80000, sha(b"print(1)" * 10000)]


def test_a_swapped_io_module_does_not_reach_the_open_code_hook(tmp_path):
    # The hook returns the bytes it hashed in an _io.BytesIO it keeps per
    # interpreter: code that swaps sys.modules['_io'] afterwards neither runs inside
    # the hook nor changes what the next file read as code gives Python.
    mod = tmp_path / "mod.py"
    mod.write_text("x = 1\n")
    code = f"""\
        import io, sys, types
        io.open_code({str(mod)!r}).close()
        calls = []
        class Evil:
            def __init__(self, data):
                calls.append(data)
            def read(self):
                return b"evil = 1"
        fake = types.ModuleType("_io")
        fake.BytesIO = Evil
        sys.modules["_io"] = fake
        with io.open_code({str(mod)!r}) as f:
            print(type(f).__module__, type(f).__name__, f.read() == b"x = 1\\n", len(calls))
    """
    a = run_audited(tmp_path, code)
    assert a.proc.stdout.split() == ["_io", "BytesIO", "True", "0"]
    reads = [r for r in a.events("auditwatch.open_code") if arg_text(r["args"][0]) == str(mod)]
    assert len(reads) == 2


def test_files_read_as_code_are_let_go_without_a_flush(tmp_path):
    # A process that stops reading code must not keep the last files it read: the
    # hasher's references are given back at the next recorded event too.
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (32 << 10))
    code = f"""\
        import io, time, tracemalloc
        tracemalloc.start()
        for _ in range(5):
            io.open_code({str(big)!r}).close()
        for _ in range(200):  # up to 20 s for the hashes (sanitizer builds are slow)
            open('/dev/null').close()  # a recorded event
            if tracemalloc.get_traced_memory()[0] < 4 << 20:
                break
            time.sleep(0.1)
        print(tracemalloc.get_traced_memory()[0] >> 20)
    """
    a = run_audited(tmp_path, code)
    assert int(a.proc.stdout) < 4, f"{a.proc.stdout.strip()} MiB still held"


def test_code_compiled_under_a_shared_name_lists_every_candidate_text(tmp_path):
    # A code object names the filename it was compiled under, not its text: the
    # texts its process run compiled under that name are all candidates (the -c
    # command counts: CPython compiles it as <string>); a text compiled under a name
    # of its own is tied to its code object alone; another process's texts are not
    # candidates.
    code = (
        "import subprocess, sys; exec('a = 1'); exec('b = 2'); "
        "exec(compile('c = 3', 'own-name', 'exec')); "
        "subprocess.run([sys.executable, '-c', 'exec(\\'z = 9\\')'], check=True)"
    )
    a = run_launched(tmp_path, "-c", code)
    _, prov = store(tmp_path, a)
    named_string: dict[str, set[str]] = {}  # run -> texts compiled as <string> there
    for r in a.events("auditwatch.code"):
        if r["args"][2] in ("<string>", "-c"):
            named_string.setdefault(r["run"], set()).add(r["args"][0])
    parent, child = a.kinds("start")[0]["run"], a.kinds("start")[1]["run"]
    assert {sha(b"a = 1"), sha(b"b = 2"), sha(code.encode() + b"\n")} <= named_string[parent]
    assert sha(b"z = 9") in named_string[child] and sha(b"a = 1") not in named_string[child]
    strings = [e for e in prov["executed"] if e["origin"] == "string"]
    (own,) = [e for e in strings if e["file"] == "own-name"]
    assert own["text_sha256"] == sha(b"c = 3") and "text_candidates" not in own
    shared = [e for e in strings if e["file"] == "<string>"]
    assert {e["run"] for e in shared} == {parent, child}
    for e in shared:
        assert "text_sha256" not in e
        assert set(e["text_candidates"]) == named_string[e["run"]]


def test_main_script_and_builtin_modules(tmp_path):
    script = tmp_path / "main.py"
    script.write_text("import sys, _imp\nprint('main')\n")
    a = run_launched(tmp_path, str(script))
    rec = opened(a)[str(script)]
    assert rec["args"][2] == sha(script.read_bytes())
    _, prov = store(tmp_path, a)
    modules = {m["module"]: m["how"] for m in prov["imports_without_code_read"]}
    assert modules.get("_imp", "built-in") == "built-in"
    origins = {e["origin"] for e in prov["executed"]}
    assert "file" in origins
