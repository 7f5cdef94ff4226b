"""The audit-event catalogue against the interpreters on this machine, and its CLI.

What the coverage checks can and cannot detect
-----------------------------------------------
Each supported version installed under ~/.pyenv/versions (and always the running
interpreter) is checked three ways:

* its standard library: every ``sys.audit("literal", ...)`` must be in the catalogue
  for that version. Catches any Python-raised event. Misses names that are not
  literals (none in CPython 3.8-3.13).
* its shared objects (libpython, lib-dynload/*.so, the executable): every
  NUL-terminated string that is the name of an event the catalogue knows in ANY
  version must be listed for THIS version. Catches C events added or backported in a
  bug-fix release and versions wrongly left out. It cannot find a C event whose name
  the catalogue has never heard of (a string in a binary does not say it is an event
  name), nor names the linker merged into the tail of a longer string (``exec`` may
  live inside ``os.exec``), nor Windows-only events (not in Linux binaries). A string
  that is also used for something else could make it demand an event that is not
  raised; none does today.
* a child interpreter that really raises a set of common events through a hook: all
  of them must be in the catalogue for its version. This is the only check that
  proves an event is raised, and only for the operations it performs.

Plus a few events per version known from CPython's sources. Removed events (e.g.
``telnetlib.*`` after 3.12) are checked by the "last" field only where a binary of
the later version is present: the stdlib check fails when a newer interpreter still
raises an event the catalogue says stopped.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditwatch import catalog
from auditwatch.cli import main

ROOT = Path(__file__).resolve().parent.parent
PYENV = Path.home() / ".pyenv" / "versions"
RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"

PY_AUDIT = re.compile(r"\b_?sys\.audit\(\s*(['\"])([^'\"]+)\1")
BINARY_STRING = re.compile(rb"\x00([A-Za-z_][A-Za-z0-9_./]{1,98})(?=\x00)")
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages"}

# Known from CPython's sources (Python/*.c, Modules/*.c, Lib/*.py of each version).
ALWAYS = {
    "open",
    "exec",
    "compile",
    "import",
    "socket.connect",
    "subprocess.Popen",
    "os.system",
    "sys.addaudithook",
    "cpython.run_command",
    "pickle.find_class",
    "ctypes.dlopen",
}
BY_HEART = {
    "3.8": ALWAYS | {"nntplib.connect", "telnetlib.Telnet.open"},
    "3.9": ALWAYS | {"os.walk", "pathlib.Path.glob"},
    "3.10": ALWAYS | {"glob.glob/2", "sqlite3.connect/handle", "sys._current_exceptions"},
    "3.11": ALWAYS | {"glob.glob/2", "sqlite3.load_extension"},
    "3.12": ALWAYS | {"sys.monitoring.register_callback", "sys._getframemodulename"},
    "3.13": ALWAYS
    | {"sys.monitoring.register_callback", "time.sleep", "_thread.start_joinable_thread"},
}
NOT_IN = {"3.8": {"marshal.loads", "glob.glob/2"}, "3.13": {"telnetlib.Telnet.open"}}


# ------------------------------------------------------------------ interpreters


def _pyenv_prefix(version: str) -> Path | None:
    """Newest ~/.pyenv/versions/3.X.Y for a minor version, or None."""
    found = []
    for path in PYENV.glob(version + ".*"):
        micro = path.name[len(version) + 1 :]
        if micro.isdigit() and (path / "bin" / "python").exists():
            found.append((int(micro), path))
    return max(found)[1] if found else None


class Interpreter:
    """Where one CPython's stdlib and binaries are."""

    def __init__(self, version: str, executable: Path, stdlib: Path, binaries: list[Path]):
        self.version = version
        self.executable = executable
        self.stdlib = stdlib
        self.binaries = binaries


def _running() -> Interpreter:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    binaries = [Path(sys.executable).resolve()]
    binaries += sorted(libdir.glob(f"libpython{RUNNING}*.so*")) + sorted(dynload.glob("*.so"))
    return Interpreter(RUNNING, Path(sys.executable), stdlib, binaries)


def _installed(version: str) -> Interpreter | None:
    prefix = _pyenv_prefix(version)
    if prefix is None:
        return None
    stdlib = prefix / "lib" / f"python{version}"
    binaries = [(prefix / "bin" / f"python{version}").resolve()]
    binaries += sorted((prefix / "lib").glob(f"libpython{version}*.so*"))
    binaries += sorted((stdlib / "lib-dynload").glob("*.so"))
    return Interpreter(version, prefix / "bin" / "python", stdlib, binaries)


def _interpreter(version: str) -> Interpreter:
    if version == "running":
        return _running()
    found = _installed(version)
    if found is None:
        pytest.skip(f"CPython {version} is not installed under {PYENV}")
    return found


TARGETS = ["running", *catalog.VERSIONS]


def _raised_in(version: str) -> set[str]:
    return {e.name for e in catalog.events_for(version)}


def stdlib_events(stdlib: Path) -> dict[str, str]:
    """sys.audit literals in a standard library: name -> first file raising it."""
    found: dict[str, str] = {}
    for path in sorted(stdlib.rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(stdlib).parts):
            continue
        text = path.read_text("utf-8", "replace")
        if "audit(" in text:
            for m in PY_AUDIT.finditer(text):
                found.setdefault(m.group(2), str(path.relative_to(stdlib)))
    return found


def binary_strings(paths: list[Path]) -> set[str]:
    found: set[bytes] = set()
    for path in paths:
        found.update(BINARY_STRING.findall(path.read_bytes()))
    return {s.decode("ascii") for s in found}


# ------------------------------------------------------------------ coverage


@pytest.mark.parametrize("target", TARGETS)
def test_stdlib_events_are_listed(target: str) -> None:
    interp = _interpreter(target)
    found = stdlib_events(interp.stdlib)
    assert found, f"no sys.audit calls found in {interp.stdlib}"
    missing = {n: f for n, f in found.items() if n not in _raised_in(interp.version)}
    assert not missing, f"CPython {interp.version} raises events missing from the catalogue"


@pytest.mark.parametrize("target", TARGETS)
def test_binary_events_are_listed(target: str) -> None:
    interp = _interpreter(target)
    assert interp.binaries, "no binaries found"
    known = set(catalog.load())
    candidates = binary_strings(interp.binaries) & known
    assert {"os.system", "socket.connect"} <= candidates, "binary strings reader found nothing"
    missing = sorted(candidates - _raised_in(interp.version))
    assert not missing, f"CPython {interp.version} binaries name events not listed for it"


PROBE = textwrap.dedent(
    """
    import gc, glob, io, json, marshal, os, pickle, shutil, socket, subprocess, sys
    import tempfile, threading
    seen = set()
    sys.addaudithook(lambda event, args: seen.add(event))
    with open(os.devnull) as f:
        pass
    exec(compile("x = 1", "<probe>", "exec"))
    import colorsys
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.close()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    os.system("true")
    os.listdir(".")
    sys._getframe()
    gc.get_referrers(seen)
    pickle.loads(pickle.dumps(os.getcwd))
    marshal.loads(marshal.dumps(1))
    d = tempfile.mkdtemp()
    shutil.rmtree(d)
    glob.glob("*")
    t = threading.Thread(target=len, args=((),))
    t.start()
    t.join()
    print(json.dumps(sorted(seen)))
    """
)


@pytest.mark.parametrize("target", TARGETS)
def test_events_raised_at_run_time_are_listed(target: str, tmp_path: Path) -> None:
    interp = _interpreter(target)
    out = subprocess.run(
        [str(interp.executable), "-I", "-c", PROBE],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        check=True,
        timeout=60,
    ).stdout
    seen = set(json.loads(out.decode().splitlines()[-1]))
    assert {"open", "exec", "compile", "import", "socket.bind", "subprocess.Popen"} <= seen
    missing = sorted(seen - _raised_in(interp.version))
    assert not missing, f"CPython {interp.version} raised events missing from the catalogue"


@pytest.mark.parametrize("version", catalog.VERSIONS)
def test_known_events_per_version(version: str) -> None:
    raised = _raised_in(version)
    assert sorted(BY_HEART[version] - raised) == []
    assert sorted(NOT_IN.get(version, set()) & raised) == []


def test_running_version_is_covered() -> None:
    # The running interpreter is checked above without skipping; it must be supported.
    assert RUNNING in catalog.VERSIONS


# ------------------------------------------------------------------ catalogue integrity


def test_every_event_is_well_formed() -> None:
    events = catalog.load()
    assert len(events) > 150
    for name, event in events.items():
        assert event.name == name
        assert event.category in catalog.CATEGORIES, name
        assert event.summary.strip(), name
        assert event.first in catalog.VERSIONS, name
        assert event.last is None or event.last in catalog.VERSIONS, name
        assert event.platforms and all(p.strip() for p in event.platforms), name
        assert all(isinstance(a.name, str) and a.name for a in event.args), name
        assert event.aborts in (True, False, None), name


def test_api() -> None:
    assert catalog.category("socket.connect") == "network"
    assert catalog.category("no.such.event") == "other"
    assert catalog.arg_names("open") == ("file", "mode", "flags")
    assert catalog.arg_names("no.such.event") == ()
    assert catalog.lookup("no.such.event") is None
    assert catalog.lookup("os.startfile").platforms == ("windows",)  # type: ignore[union-attr]
    assert catalog.load() is catalog.load()
    assert catalog.events_for("3.7") == []
    with pytest.raises(ValueError):
        catalog.events_for("three")


def test_overlay_is_merged() -> None:
    """events.json must be regenerated after overlay.json changes."""
    overlay = json.loads((ROOT / "src/auditwatch/catalog/overlay.json").read_text("utf-8"))
    assert tuple(overlay["categories"]) == catalog.CATEGORIES
    events = catalog.load()
    for name, fields in overlay["events"].items():
        assert name in events, f"overlay entry for unknown event {name}"
        for key in ("summary", "category", "aborts"):
            if key in fields:
                assert getattr(events[name], key) == fields[key], (name, key)
        if "platforms" in fields:
            assert list(events[name].platforms) == fields["platforms"], name


def test_generator_helpers() -> None:
    spec = importlib.util.spec_from_file_location("gen_catalog", ROOT / "tools/gen_catalog.py")
    gen = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["gen_catalog"] = gen  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(gen)  # type: ignore[union-attr]
    finally:
        del sys.modules["gen_catalog"]
    assert gen.format_types("Osi") == ("object", "str", "int")
    assert gen.format_types("(O)") == ("object",)  # "(O)" builds the argument tuple itself
    assert gen.format_types("O(ii)n") == ("object", "tuple", "int")
    assert gen.format_types("s#z") == ("str", "str | None")
    scan = gen.VersionScan("3.12", "test")
    gen.scan_c(scan, "Modules/x.c", 'if (PySys_Audit("a.b", "Os", o, s) < 0) {}\n')
    gen.scan_c(scan, "PC/y.c", '    _PySys_Audit(tstate, "c.d", NULL);\n')
    assert scan.sites["a.b"][0].checked is True
    assert scan.sites["c.d"][0].checked is False
    assert scan.sites["c.d"][0].path.endswith("[windows]")
    gen.scan_docs(scan, "Doc/library/x.rst", ".. audit-event:: e.f path,mode x.open\n")
    assert scan.sites["e.f"][0].args == ("path", "mode")


# ------------------------------------------------------------------ CLI


def _run(*args: str):
    return CliRunner().invoke(main, ["events", *args])


def test_cli_table() -> None:
    result = _run()
    assert result.exit_code == 0, result.output
    assert "socket.connect" in result.output and "network" in result.output


def test_cli_json() -> None:
    result = _run("--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data) == len(catalog.load())
    entry = next(e for e in data if e["name"] == "os.system")
    assert entry["category"] == "process" and entry["args"][0]["name"] == "command"


def test_cli_category_and_python() -> None:
    result = _run("--json", "--category", "network", "--python", "3.13")
    assert result.exit_code == 0, result.output
    names = {e["name"] for e in json.loads(result.output)}
    assert "socket.connect" in names and "open" not in names
    assert "telnetlib.Telnet.open" not in names  # removed in 3.13
    old = _run("--json", "--python", "3.8", "--category", "network")
    assert "telnetlib.Telnet.open" in {e["name"] for e in json.loads(old.output)}


def test_cli_single_event() -> None:
    result = _run("sys.addaudithook")
    assert result.exit_code == 0, result.output
    assert "hooks" in result.output and "RuntimeError" in result.output
    data = json.loads(_run("--json", "open").output)
    assert data["name"] == "open" and data["category"] == "file"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--python", "3.7"], "3.8"),
        (["--category", "nope"], "network"),
        (["socket.conect"], "socket.connect"),
    ],
)
def test_cli_errors(args: list[str], expected: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert expected in result.output  # the message lists valid choices or a close match
