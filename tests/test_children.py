"""Every Python process started with auditwatch's environment is audited and linked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers import Audited, audit_env, read_records, run_audited


def starts(a: Audited) -> dict[str, dict]:
    return {r["run"]: r for r in a.kinds("start")}


def exits(a: Audited) -> dict[str, dict]:
    return {r["run"]: r["status"] for r in a.kinds("exit")}


def root_run(a: Audited) -> str:
    (root,) = [r for r in a.kinds("start") if r["parent_run"] is None]
    return root["run"]


def children_of(a: Audited, run: str) -> list[dict]:
    return [s for s in a.kinds("start") if s["parent_run"] == run]


def test_the_run_reaches_children_through_os_environ_without_a_record_of_its_own(tmp_path):
    # The recorder puts AUDITWATCH_PARENT_RUN into os.environ itself, so a child
    # started with a copy of it is linked; that is auditwatch's bookkeeping, not the
    # program's, and leaves no os.putenv record.
    code = """\
        import os, subprocess, sys
        print(os.environ["AUDITWATCH_PARENT_RUN"])
        subprocess.run([sys.executable, '-c', 'pass'], env=dict(os.environ), check=True)
    """
    a = run_audited(tmp_path, code)
    root = root_run(a)
    assert a.proc.stdout.split() == [root]
    (child,) = children_of(a, root)
    assert child["proc"]["argv"][-1] == "pass"
    keys = [r["args"][0] for r in a.events("os.putenv")]
    assert not [k for k in keys if "AUDITWATCH" in str(k)], keys


def test_subprocess_child_and_grandchild_are_linked(tmp_path):
    code = """\
        import subprocess, sys
        inner = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'print(3)'], check=True)"
        subprocess.run([sys.executable, '-c', inner], check=True)
    """
    a = run_audited(tmp_path, code)
    root = root_run(a)
    (child,) = children_of(a, root)
    (grandchild,) = children_of(a, child["run"])
    assert grandchild["proc"]["argv"][-1] == "print(3)"
    assert len(exits(a)) == 3 and all(s == {"how": "exit", "code": 0} for s in exits(a).values())


def test_exec_replaces_the_image_and_links_the_new_run(tmp_path):
    # The imports leave files being hashed off-thread when exec comes: their records
    # must still precede the exec, which is flushed before the image is replaced.
    code = """\
        import os, sys
        import email.message, http.client, json, xml.etree.ElementTree
        os.execv(sys.executable, [sys.executable, '-c', 'import sys; sys.exit(5)'])
    """
    a = run_audited(tmp_path, code, check=False)
    assert a.proc.returncode == 5
    root = root_run(a)
    (new,) = children_of(a, root)
    assert new["pid"] == a.records[0]["pid"]  # same process, new image, new run
    before = [r for r in a.records if r["run"] == root]
    assert before[-1]["event"] == "os.exec" and before[-1]["action"] == "flush"
    assert exits(a) == {new["run"]: {"how": "exit", "code": 5}}


def test_posix_spawn_child_is_linked(tmp_path):
    code = """\
        import os, sys
        pid = os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass'], os.environ)
        os.waitpid(pid, 0)
    """
    a = run_audited(tmp_path, code)
    assert len(children_of(a, root_run(a))) == 1


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_multiprocessing_children_are_audited(tmp_path, method):
    code = f"""\
        import multiprocessing as mp, sys
        def work(x):
            sys.audit('mp.work', x)
            return x * 2
        if __name__ == '__main__':
            ctx = mp.get_context({method!r})
            with ctx.Pool(2) as pool:
                print(sum(pool.map(work, range(6))))
    """
    script = tmp_path / "mp_script.py"
    import textwrap

    script.write_text(textwrap.dedent(code))
    env = audit_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "30"
    a = Audited(proc, read_records(tmp_path / "records.jsonl"))
    work = a.events("mp.work")
    assert sorted(r["args"][0] for r in work) == list(range(6))
    root = root_run(a)
    runs = starts(a)
    # Every worker run descends from the main program's run.
    for r in work:
        run = r["run"]
        while runs[run]["parent_run"] is not None:
            run = runs[run]["parent_run"]
        assert run == root
        assert r["run"] != root
    if method == "fork":
        assert all(runs[r["run"]]["proc"]["fork"] for r in work)


def test_fork_child_gets_a_new_run_and_an_exit_record(tmp_path):
    code = """\
        import os, sys
        pid = os.fork()
        if pid == 0:
            sys.audit('in.child')
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status) if hasattr(os, 'waitstatus_to_exitcode') else status >> 8)
    """
    a = run_audited(tmp_path, code)
    assert a.proc.stdout.strip() == "7"
    root = root_run(a)
    (child,) = children_of(a, root)
    assert child["proc"]["fork"] is True and child["pid"] != a.records[0]["pid"]
    (ev,) = a.events("in.child")
    assert ev["run"] == child["run"]
    assert exits(a)[child["run"]] == {"how": "os._exit", "code": 7}
    child_seqs = [r["seq"] for r in a.records if r["run"] == child["run"]]
    assert child_seqs == list(range(1, len(child_seqs) + 1))


def test_sigkilled_child_has_no_exit_record(tmp_path):
    code = """\
        import os, signal, subprocess, sys, time
        p = subprocess.Popen([sys.executable, '-c', 'import sys, time; sys.audit("child.up"); time.sleep(60)'])
        time.sleep(1.0)
        p.send_signal(signal.SIGKILL)
        p.wait()
    """
    a = run_audited(tmp_path, code)
    (child,) = children_of(a, root_run(a))
    assert child["run"] not in exits(a)
    assert [r for r in a.events("child.up") if r["run"] == child["run"]]


def test_sigterm_writes_an_exit_record_then_terminates(tmp_path):
    env = audit_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.audit('up'); time.sleep(60)"], env=env
    )
    import time

    deadline = time.time() + 10
    while time.time() < deadline and not any(
        r.get("event") == "up" for r in read_records(tmp_path / "records.jsonl")
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    records = read_records(tmp_path / "records.jsonl")
    assert records[-1]["kind"] == "exit"
    assert records[-1]["status"] == {"how": "signal", "signal": signal.SIGTERM}


def test_auditing_adds_one_thread_whether_or_not_it_handles_sigterm(tmp_path):
    # The writer thread, which also answers SIGTERM. Every event ignored: no file is
    # handed to the hasher, whose thread starts with its first file.
    code = "import os; print(len(os.listdir('/proc/self/task')))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    plain = int(
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    counts = []
    for on in (0, 1):
        (tmp_path / f"sigterm-{on}").mkdir()
        ran = run_audited(
            tmp_path / f"sigterm-{on}", code, events="ignore:*", options=f"sigterm={on}"
        )
        counts.append(int(ran.proc.stdout))
    assert counts == [plain + 1, plain + 1]


def test_sigterm_while_recording_drains_every_record(tmp_path):
    # A process recording in a tight loop spends much of its time holding the
    # ring's lock, so SIGTERM often lands there. The handler must not wait for the
    # drain on a lock it interrupted: the termination finishes when the lock is
    # released. Every record counted before the signal is on record, the exit
    # record follows, and the process dies of SIGTERM at once, not after a timeout.
    import time

    code = (
        "import sys, time\n"
        "print('up', flush=True)\n"
        "for i in range(300000):\n"  # bounded: a lost signal must not fill the disk
        "    sys.audit('tick', i)\n"
        "time.sleep(60)\n"
    )
    for attempt in range(12):
        sink = tmp_path / f"records-{attempt}.jsonl"
        env = audit_env(tmp_path, AUDITWATCH_SINK=f"file:{sink}")
        with subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE
        ) as proc:
            try:
                assert proc.stdout.readline() == b"up\n"
                time.sleep(0.002 * attempt)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=10) == -signal.SIGTERM
            finally:
                proc.kill()
        assert time.monotonic() - started < 2.0, "the handler waited out its timeout"
        records = read_records(sink)
        ticks = [r["args"][0] for r in records if r.get("event") == "tick"]
        assert ticks == list(range(len(ticks)))
        assert records[-1]["kind"] == "exit", attempt
        assert records[-1]["status"] == {"how": "signal", "signal": signal.SIGTERM}


def test_sigterm_while_waiting_for_a_stuck_sink_still_terminates(tmp_path):
    # The collector accepts and never reads: the ring fills and the recording thread
    # waits for room, inside the recorder. The termination is deferred there, so
    # that wait must give up (after flush_timeout) rather than keep the process
    # alive: it dies of SIGTERM within about twice flush_timeout plus a second.
    import socket
    import time

    path = str(tmp_path / "stuck.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(4)
        env = audit_env(tmp_path, options="flush_timeout=0.5", AUDITWATCH_SINK=f"unix:{path}")
        code = "import sys\nprint('up', flush=True)\nwhile True: sys.audit('tick', 'x' * 200)"
        with subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE
        ) as proc:
            try:
                conn, _ = server.accept()  # accepted, never read
                assert proc.stdout.readline() == b"up\n"
                time.sleep(1.0)  # long enough to fill the socket and the ring
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == -signal.SIGTERM
                assert time.monotonic() - started < 2 * 0.5 + 1 + 1.0
                conn.close()
            finally:
                proc.kill()


def test_collector_gone_means_spool_not_loss(tmp_path):
    # The sink is a socket nobody listens on: every record goes to the spool file.
    code = "import sys; [sys.audit('spooled', i) for i in range(1000)]"
    env = audit_env(tmp_path)
    env["AUDITWATCH_SINK"] = f"unix:{tmp_path / 'nobody.sock'}"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    (spool,) = (tmp_path / "spool").glob("*.jsonl")
    records = read_records(spool)
    assert len([r for r in records if r.get("event") == "spooled"]) == 1000
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["kind"] == "exit"
