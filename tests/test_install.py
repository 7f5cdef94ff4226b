"""auditwatch install / uninstall / doctor: always on, and exactly undone."""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import launcher_path, read_records

AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def aw(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([AUDITWATCH, *args], env=clean_env(), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def env_dir(tmp_path) -> Path:
    """A new environment with auditwatch in it (copied from this one: no pip, no build)."""
    root = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_path("purelib"))
    (target,) = (root / "lib").glob("python*/site-packages")
    shutil.copytree(site / "auditwatch", target / "auditwatch")
    for name in ("auditwatch.pth", "_auditwatch_boot.py"):  # the line, and what it imports
        shutil.copy2(site / name, target / name)
    py_compile.compile(str(target / "_auditwatch_boot.py"), doraise=True)  # as pip does
    for native in site.glob("_auditwatch*.so"):  # the recorder: a top-level extension
        shutil.copy2(native, target / native.name)
    shutil.copy2(launcher_path(), root / "bin" / "auditwatch-python")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the tree by content (symlinks by target), with its mode."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = f"{st.st_mode:o}:" + hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = f"dir:{st.st_mode:o}"
    return out


def test_install_uninstall_round_trip_with_launcher(tmp_path, env_dir):
    before = snapshot(env_dir)
    records = tmp_path / "records.jsonl"
    aw("install", "--venv", str(env_dir), "--launcher", "--sink", f"file:{records}", "--deny-hooks")
    python = env_dir / "bin" / "python"
    assert python.read_bytes() == launcher_path().read_bytes()
    assert (env_dir / "auditwatch.conf").exists()
    # no AUDITWATCH_* variables: the installed config is enough, -S included
    code = (
        "import subprocess, sys; subprocess.run([sys.executable, '-S', '-c', 'pass'], check=True)"
    )
    p = subprocess.run([str(python), "-c", code], env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    starts = [r for r in read_records(records) if r["kind"] == "start"]
    assert len(starts) == 2 and {s["installed"] for s in starts} == {"pre-init"}
    child = next(s for s in starts if s["parent_run"])
    assert "-S" in child["proc"]["argv"]
    # python3 is a symlink to python: audited the same way
    p = subprocess.run([str(env_dir / "bin" / "python3"), "-I", "-c", "pass"], env=clean_env())
    assert p.returncode == 0
    assert len([r for r in read_records(records) if r["kind"] == "start"]) == 3
    aw("uninstall", "--venv", str(env_dir))
    assert snapshot(env_dir) == before


def test_installed_config_under_a_prefix_that_is_not_utf8(tmp_path, env_dir):
    # auditwatch.pth looks for the config with os.path.exists, in the file-system
    # encoding; the bootstrap must find the same file, or the process runs unaudited
    # without a word. (venv refuses such a path: reach the environment through a
    # symbolic link, which sys.prefix keeps.) CPython 3.12 and later cannot import
    # an extension from such a path at all: then the config's promise holds by
    # refusing to run.
    records = tmp_path / "records.jsonl"
    (env_dir / "auditwatch.conf").write_text(f"sink = file:{records}\n")
    link = Path(os.fsdecode(os.fsencode(tmp_path) + b"/env\xff"))
    link.symlink_to(env_dir)
    code = "import sys; print(ascii(sys.prefix))"
    p = subprocess.run([str(link / "bin" / "python"), "-c", code], env=clean_env(),
                       capture_output=True, text=True)  # fmt: skip
    starts = [r["installed"] for r in read_records(records)] if records.exists() else []
    if sys.version_info >= (3, 12):
        assert p.returncode == 70, p.stderr
        assert "cannot load the native hook (UnicodeEncodeError" in p.stderr
        assert "auditwatch.conf requires auditing, exiting" in p.stderr
        assert not starts
    else:
        assert p.returncode == 0, p.stderr
        assert "\\udcff" in p.stdout, p.stdout
        assert starts[0] == "site"


def test_install_without_launcher_uses_the_bootstrap(tmp_path, env_dir):
    before = snapshot(env_dir)
    records = tmp_path / "records.jsonl"
    aw("install", "--venv", str(env_dir), "--sink", f"file:{records}")
    python = env_dir / "bin" / "python"
    assert python.is_symlink()  # untouched
    p = subprocess.run([str(python), "-c", "pass"], env=clean_env())
    assert p.returncode == 0
    (start,) = [r for r in read_records(records) if r["kind"] == "start"]
    assert start["installed"] == "site"
    aw("uninstall", "--venv", str(env_dir))
    assert snapshot(env_dir) == before


def test_doctor_reports_how_and_what_is_not_covered(tmp_path, env_dir):
    d = json.loads(aw("doctor", "--venv", str(env_dir), "--json").stdout)
    assert d["how"].startswith("on demand") and d["new_process"]["installed"] is None
    assert d["boot_module"].endswith("site-packages/_auditwatch_boot.py")
    assert (
        d["boot_module_compiled"]
        and "compileall" not in aw("doctor", "--venv", str(env_dir)).stdout
    )
    aw("install", "--venv", str(env_dir), "--launcher", "--sink", f"file:{tmp_path / 'r.jsonl'}")
    d = json.loads(aw("doctor", "--venv", str(env_dir), "--json").stdout)
    assert d["python_is_launcher"] and d["new_process"]["installed"] == "pre-init"
    assert any("-S" in line for line in d["covered"])
    assert any("non-Python programs" in line for line in d["not_covered"])
    assert any("native code" in line for line in d["not_covered"])
    assert d["collector_sha256"] in ("openssl", "builtin")
    text = aw("doctor", "--venv", str(env_dir)).stdout
    assert "not covered:" in text and "collector:   seals with" in text
    aw("uninstall", "--venv", str(env_dir))


def test_doctor_says_when_the_module_the_pth_line_imports_is_missing(tmp_path, env_dir):
    (site,) = (env_dir / "lib").glob("python*/site-packages")
    (site / "_auditwatch_boot.py").unlink()
    for pyc in (site / "__pycache__").glob("_auditwatch_boot.*"):
        pyc.unlink()
    d = json.loads(aw("doctor", "--venv", str(env_dir), "--json").stdout)
    assert d["how"].startswith("broken: ") and "_auditwatch_boot.py" in d["how"]
    assert d["boot_module"] is None
    env = dict(clean_env(), AUDITWATCH_SINK=f"file:{tmp_path / 'r.jsonl'}")
    p = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "pass"], env=env, capture_output=True, text=True
    )
    assert "auditwatch.pth" in p.stderr and "_auditwatch_boot" in p.stderr  # site says so
    assert not (tmp_path / "r.jsonl").exists()


def test_doctor_says_when_the_boot_module_is_not_compiled(env_dir):
    (site,) = (env_dir / "lib").glob("python*/site-packages")
    for pyc in (site / "__pycache__").glob("_auditwatch_boot.*"):
        pyc.unlink()
    d = json.loads(aw("doctor", "--venv", str(env_dir), "--json").stdout)
    assert d["boot_module"] and not d["boot_module_compiled"]
    text = aw("doctor", "--venv", str(env_dir)).stdout
    assert f"python -m compileall {site / '_auditwatch_boot.py'}" in text


def test_the_wheel_ships_the_boot_module_bytecode():
    # pip install --no-compile leaves only what the wheel carries: without the boot
    # module's bytecode every start-up compiles it (docs/deployment.md). The wheel's
    # own files are in RECORD with their hash; pip's compiled files without one.
    from importlib.metadata import files

    pyc = f"__pycache__/_auditwatch_boot.{sys.implementation.cache_tag}.pyc"
    shipped = [f for f in files("auditwatch") or [] if str(f) == pyc and f.hash is not None]
    assert shipped, f"{pyc} is not among the wheel's files"


def test_a_broken_config_stops_processes_instead_of_running_unaudited(tmp_path, env_dir):
    aw("install", "--venv", str(env_dir), "--launcher", "--sink", f"file:{tmp_path / 'r.jsonl'}")
    conf = env_dir / "auditwatch.conf"
    saved = conf.read_bytes()
    conf.write_text("sink = nowhere:at-all\n")
    p = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "print(1)"],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert p.returncode == 70 and p.stdout == ""
    conf.write_bytes(saved)
    aw("uninstall", "--venv", str(env_dir))


def test_install_refuses_twice_and_manifest_without_launcher(tmp_path, env_dir):
    sink = f"file:{tmp_path / 'r.jsonl'}"
    m = tmp_path / "m.json"
    m.write_text("{}")
    p = aw("install", "--venv", str(env_dir), "--sink", sink, "--manifest", str(m), check=False)
    assert p.returncode != 0 and "--launcher" in p.stderr
    aw("install", "--venv", str(env_dir), "--sink", sink)
    p = aw("install", "--venv", str(env_dir), "--sink", sink, check=False)
    assert p.returncode != 0 and "already installed" in p.stderr
    aw("uninstall", "--venv", str(env_dir))
