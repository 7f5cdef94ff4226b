"""auditwatch-python: hooks before Py_Initialize, and otherwise exactly `python`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import arg_text, audit_env, launcher_path, read_records, run_audited, run_launched

LAUNCHER = str(launcher_path())
STATUS = "import _auditwatch; print(_auditwatch.status()['installed'])"


def test_launcher_is_installed_beside_python():
    assert os.access(LAUNCHER, os.X_OK)


def test_startup_is_on_record_with_the_launcher(tmp_path):
    a = run_launched(tmp_path, "-c", STATUS)
    assert a.proc.stdout.strip() == "pre-init"  # the module sees the launcher's recorder
    assert {r["installed"] for r in a.records} == {"pre-init"}
    assert len(a.kinds("start")) == 1 and len(a.runs()) == 1  # not installed twice
    imported = [arg_text(r["args"][0]) for r in a.events("import")]
    assert "site" in imported
    opened = [arg_text(r["args"][0]) for r in a.events("auditwatch.open_code")]
    assert any(p.endswith("/auditwatch.pth") for p in opened)  # the .pth files that ran
    (cmd,) = a.events("cpython.run_command")
    assert arg_text(cmd["args"][0]).rstrip("\n") == STATUS
    assert a.kinds("exit")[0]["status"] == {"how": "exit", "code": 0}
    # start-up events come before the command
    seqs = {r["event"]: r["seq"] for r in reversed(a.events())}
    assert seqs["import"] < cmd["seq"]


def _compiled_texts(a) -> list[str]:
    texts = []
    for r in a.events("compile"):
        source = r["args"][0]
        if isinstance(source, dict):
            source = source.get("text", source.get("v", ""))
        texts.append(str(source))
    return texts


@pytest.mark.parametrize("how", ["launcher", "site"])
def test_startup_compiles_no_guard_in_any_interpreter(tmp_path, how):
    # auditwatch.pth is one line, `import _auditwatch_boot`, whose guarded first import
    # of the extension was compiled at install: a start-up compiles nothing of
    # auditwatch's but that line, in the main interpreter or in a subinterpreter, which
    # runs site again and loads the recorder there (docs/performance.md).
    pytest.importorskip("_testcapi")
    code = "import _testcapi; _testcapi.run_in_subinterp('import sys'); print('ok')"
    a = run_launched(tmp_path, "-c", code) if how == "launcher" else run_audited(tmp_path, code)
    assert a.proc.stdout.strip() == "ok"
    ours = [t for t in _compiled_texts(a) if "auditwatch" in t]
    assert ours and {t.strip() for t in ours} == {"import _auditwatch_boot"}
    sub = [arg_text(r["args"][0]) for r in a.events("import") if r["interp"] > 0]
    assert "_auditwatch_boot" in sub and "_auditwatch" in sub


def test_a_late_recorder_is_loaded_in_a_later_subinterpreter(tmp_path):
    # auditwatch.start(children=False) leaves AUDITWATCH_SINK unset: only the
    # recorder's AUDITWATCH_LOADED_PID tells _auditwatch_boot, in a subinterpreter's
    # site, that this process is recorded (docs/config.md). On 3.8 a subinterpreter's
    # os.environ is the main interpreter's start-up copy, without it.
    pytest.importorskip("_testcapi")
    records = tmp_path / "records.jsonl"
    code = (
        "import _testcapi, auditwatch; "
        f"auditwatch.start(sink={'file:' + str(records)!r}, children=False); "
        "_testcapi.run_in_subinterp('import sys'); auditwatch.runtime.flush()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    sub = [
        arg_text(r["args"][0])
        for r in read_records(records)
        if r.get("event") == "import" and r["interp"] > 0
    ]
    assert "_auditwatch_boot" in sub  # site ran there, under the recorder
    assert ("_auditwatch" in sub) == (sys.version_info >= (3, 9)), sub


def test_startup_is_not_on_record_without_it(tmp_path):
    a = run_audited(tmp_path, STATUS + "; import json; print(_auditwatch.status()['open_code'])")
    assert a.proc.stdout.split() == ["site", "True"]
    assert {r["installed"] for r in a.records} == {"site"}
    assert "site" not in [arg_text(r["args"][0]) for r in a.events("import")]
    # The open-code hook is set with the hook, during site: site itself and what it
    # imported were read before it; later .pth files and the command's imports are
    # on record.
    opened = [arg_text(r["args"][0]) for r in a.events("auditwatch.open_code")]
    assert not [p for p in opened if "/site.py" in p or "/site.cpython" in p]
    assert not [p for p in opened if "/os.py" in p or "/os.cpython" in p]
    assert any("/json/" in p for p in opened)
    # auditwatch's own open-code hook is not reported as the program's
    assert a.events("setopencodehook") == []


def test_a_programs_own_open_code_hook_is_kept(tmp_path):
    # A program that set an open-code hook before auditwatch starts keeps it:
    # auditwatch records events but no files read as code, and says so.
    code = """\
        import ctypes, io, sys
        HOOK = ctypes.CFUNCTYPE(ctypes.py_object, ctypes.py_object, ctypes.c_void_p)
        seen = []
        def mine(path, data):
            seen.append(path)
            return io.open(path, 'rb')
        keep = HOOK(mine)
        f = ctypes.pythonapi.PyFile_SetOpenCodeHook
        f.argtypes = [HOOK, ctypes.c_void_p]
        f(keep, None)
        import auditwatch.runtime as r
        r.start(sink='file:' + sys.argv[1], children=False)
        import json.decoder
        print(r.status()['open_code'], any('json' in p for p in seen))
    """
    out = tmp_path / "late.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True"]
    records = read_records(out)
    assert records and not [r for r in records if r.get("event") == "auditwatch.open_code"]
    assert [r for r in records if r.get("event") == "import"]


def test_launcher_without_configuration_warns_and_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    p = subprocess.run([LAUNCHER, "-c", "print(1)"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == "1\n"
    assert "NOT audited" in p.stderr
    env["AUDITWATCH_REQUIRED"] = "1"
    p = subprocess.run([LAUNCHER, "-c", "print(1)"], env=env, capture_output=True, text=True)
    assert p.returncode == 70 and p.stdout == ""


PROBE = (
    "import json, sys; print(json.dumps({'argv': sys.argv, 'flags': list(sys.flags), "
    "'path0': sys.path[0], 'prefix': sys.prefix, 'opt': sys.flags.optimize}))"
)

CASES = [
    (["-c", PROBE, "a", "-b", "--c"], None),
    (["-I", "-c", PROBE], None),
    (["-E", "-B", "-O", "-c", PROBE], None),
    (["-S", "-c", PROBE], None),
    (["-X", "utf8", "-W", "error", "-c", PROBE], None),
    (["-c", "raise SystemExit(7)"], None),
    (["-c", "raise ValueError('boom')"], None),
    (["-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"], "some input\n"),
    (["-"], "print(6 * 7)\nimport sys; print(sys.argv)\n"),
    ([], "print('from stdin')\n"),
    (["-m", "json.tool"], '{"b": 1, "a": [1, 2]}'),
    (["-i", "-c", "x = 20"], "print(x + 22)\n"),
    (["-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], None),
    (["-c", "import os, signal; os.kill(os.getpid(), signal.SIGINT)"], None),
    (["-c", "import os; os._exit(3)"], None),
    (["--version"], None),
    (["-Z"], None),
]


@pytest.mark.parametrize(("args", "stdin"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_behaves_like_python(tmp_path, args, stdin):
    results = []
    for program in (sys.executable, LAUNCHER):
        d = tmp_path / os.path.basename(program)
        d.mkdir()
        env = audit_env(d)
        p = subprocess.run(
            [program, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
        )
        # The only differences by design: the program's name in messages
        stderr = p.stderr.replace(program, "PYTHON").replace(os.path.basename(program), "PYTHON")
        stderr = stderr.replace("`python -h", "`PYTHON -h")
        results.append((p.returncode, p.stdout, stderr))
    assert results[0] == results[1]


def test_script_argv_and_executable(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys, json; print(json.dumps([sys.argv, sys.executable]))\n")
    a = run_launched(tmp_path, str(script), "x", "y")
    argv, executable = json.loads(a.proc.stdout)
    assert argv == [str(script), "x", "y"]
    assert executable == LAUNCHER  # by design: children started with it are audited too
    (run_file,) = a.events("cpython.run_file")
    assert arg_text(run_file["args"][0]) == str(script)


def test_signal_exit_record(tmp_path):
    a = run_launched(
        tmp_path, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", check=False
    )
    assert a.proc.returncode == -signal.SIGTERM
    assert a.kinds("exit")[0]["status"] == {"how": "signal", "signal": signal.SIGTERM}


def test_children_of_the_launcher_are_linked(tmp_path):
    code = (
        "import subprocess, sys; subprocess.run([sys.executable, '-S', '-c', 'pass'], check=True)"
    )
    a = run_launched(tmp_path, "-c", code)
    starts = a.kinds("start")
    assert len(starts) == 2
    child = next(s for s in starts if s["parent_run"])
    assert child["installed"] == "pre-init"  # -S: no site, still audited


AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"


@pytest.mark.parametrize("flag", [None, "--no-launcher"])
def test_auditwatch_run_uses_the_launcher(tmp_path, flag):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    out = tmp_path / "out"
    options = [flag] if flag else []
    p = subprocess.run(
        [AUDITWATCH, "run", "-q", "-o", str(out), *options, "--", sys.executable, "-c", "pass"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    records = read_records(out / "latest" / "records.jsonl")
    expected = "site" if flag else "pre-init"
    assert {r["installed"] for r in records if "installed" in r} == {expected}


def test_with_launcher_rewrites_only_this_python(tmp_path):
    from auditwatch.commands.run import with_launcher

    assert with_launcher([sys.executable, "-c", "x"]) == [LAUNCHER, "-c", "x"]
    assert with_launcher(["/bin/sh", "-c", "x"]) == ["/bin/sh", "-c", "x"]
    other = tmp_path / "python"
    other.write_text(textwrap.dedent("#!/bin/sh\n"))
    other.chmod(0o755)
    assert with_launcher([str(other)]) == [str(other)]
