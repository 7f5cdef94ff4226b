"""``auditwatch install`` / ``uninstall``: every Python process of an environment
audited, without environment variables (docs/launcher.md).

install writes ``<env>/auditwatch.conf`` (read by the ``.pth`` bootstrap and by the
launcher when ``AUDITWATCH_SINK`` is not set) and, with ``--launcher``, puts
``auditwatch-python`` in place of the environment's ``bin/python`` (and of
``python3``/``python3.X`` where they are not symlinks to it), keeping the originals.
``<env>/auditwatch.install.json`` says what was changed, so uninstall can put every
byte back: the originals are moved back (a symlink is recreated with its target).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

from auditwatch.runtime import CONFIG_NAME as CONFIG  # where the bootstrap looks

STATE = "auditwatch.install.json"
BACKUP_DIR = ".auditwatch-originals"
LAUNCHER = "auditwatch-python"
MODES = {
    "command": ["deny:cpython.run_command"],
    "module": ["deny:cpython.run_module"],
    "stdin": ["deny:auditwatch.mode.stdin"],
    "interactive": [
        "deny:auditwatch.mode.interactive",
        "deny:cpython.run_interactivehook",
        "deny:cpython.run_startup",
    ],
}
HOOKS_POLICY = ["deny:sys.addaudithook", "deny:setopencodehook"]


def policy_events(deny_hooks: bool, modes: list[str]) -> list[str]:
    """The event-table entries of the PEP 551 policies (docs/launcher.md)."""
    entries = list(HOOKS_POLICY) if deny_hooks else []
    for mode in modes:
        entries += MODES[mode]
    return entries


def python_names() -> list[str]:
    v = sys.version_info
    return ["python", f"python{v[0]}", f"python{v[0]}.{v[1]}"]


def environment(venv: str | None) -> Path:
    root = Path(venv).resolve() if venv else Path(sys.prefix)
    if not (root / "bin" / "python").exists():
        raise click.ClickException(f"{root} is not a Python environment (no bin/python)")
    pth = glob.glob(str(root / "lib*" / "python*" / "site-packages" / "auditwatch.pth"))
    if not pth:
        raise click.ClickException(
            f"auditwatch is not installed in {root}: pip install it there first"
        )
    return root


def write_config(root: Path, values: dict[str, str]) -> None:
    lines = [
        "# Written by `auditwatch install`; `auditwatch uninstall` removes it.",
        "# Every Python of this environment is audited with these settings unless",
        "# AUDITWATCH_SINK is set. Reference: docs/launcher.md.",
    ]
    for key in ("sink", "events", "options", "deny", "manifest"):
        value = values.get(key) or ""
        if "\n" in value:
            raise click.ClickException(f"{key} cannot contain a newline")
        if value:
            lines.append(f"{key} = {value}")
    (root / CONFIG).write_text("\n".join(lines) + "\n", encoding="utf-8")


def install_launcher(root: Path) -> list[dict]:
    """Replace bin/python (and python3, python3.X unless they point at it)."""
    bindir = root / "bin"
    launcher = bindir / LAUNCHER
    if not launcher.is_file():
        raise click.ClickException(f"{launcher} is missing: reinstall auditwatch in {root}")
    backup = root / BACKUP_DIR
    backup.mkdir(exist_ok=False)
    names = python_names()
    replaced = []
    for name in names:
        path = bindir / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() and os.readlink(path) in names:
            continue  # python3 -> python: follows the replaced file
        entry: dict = {"name": name}
        if path.is_symlink():
            entry["symlink"] = os.readlink(path)
            path.unlink()
        else:
            entry["moved_to"] = str(backup / name)
            os.replace(path, backup / name)
        tmp = bindir / f".{name}.auditwatch"
        shutil.copyfile(launcher, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        replaced.append(entry)
    return replaced


@click.command("install")
@click.option("--venv", type=click.Path(exists=True, file_okay=False), help="Default: this one.")
@click.option(
    "--launcher",
    is_flag=True,
    help="Replace the environment's python by auditwatch-python: hooks before start-up, "
    "children started with -S/-I audited, open-code hook (provenance, manifests).",
)
@click.option(
    "--sink",
    required=True,
    help="Where records go: unix:/path (a collector's socket) or file:/path.",
)
@click.option("--events", default="", help="Event-table entries, as AUDITWATCH_EVENTS.")
@click.option("--options", "options_", default="", help="Recorder options, as AUDITWATCH_OPTIONS.")
@click.option("--deny", default="", help="Deny rules, as AUDITWATCH_DENY.")
@click.option("--deny-hooks", is_flag=True, help="Refuse audit and open-code hooks added later.")
@click.option(
    "--restrict",
    multiple=True,
    type=click.Choice(sorted(MODES)),
    help="Refuse a start-up mode (repeatable).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    help="Verified code: only files listed here may be opened as code (needs --launcher).",
)
def install(
    venv: str | None,
    launcher: bool,
    sink: str,
    events: str,
    options_: str,
    deny: str,
    deny_hooks: bool,
    restrict: tuple[str, ...],
    manifest: str | None,
) -> None:
    """Audit every Python process of an environment, without environment variables."""
    root = environment(venv)
    if (root / CONFIG).exists() or (root / STATE).exists():
        raise click.ClickException(f"auditwatch is already installed in {root}: uninstall first")
    if manifest and not launcher:
        raise click.ClickException("--manifest needs --launcher (the open-code hook)")
    if not sink.startswith(("unix:/", "file:/")):
        raise click.ClickException("--sink must be unix:/absolute/path or file:/absolute/path")
    entries = [*policy_events(deny_hooks, list(restrict)), *filter(None, events.split(","))]
    values = {
        "sink": sink,
        "events": ",".join(entries),
        "options": options_,
        "deny": deny,
        "manifest": str(Path(manifest).resolve()) if manifest else "",
    }
    replaced: list[dict] = []
    if launcher:
        replaced = install_launcher(root)
    state = {
        "auditwatch_install": 1,
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "launcher": launcher,
        "replaced": replaced,
        "config": values,
    }
    (root / STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    write_config(root, values)
    click.echo(f"auditwatch installed in {root}: records go to {sink}", err=True)
    if launcher:
        click.echo(f"  bin/python is now auditwatch-python (originals in {BACKUP_DIR}/)", err=True)


@click.command("uninstall")
@click.option("--venv", type=click.Path(exists=True, file_okay=False), help="Default: this one.")
def uninstall(venv: str | None) -> None:
    """Undo `auditwatch install`: the environment's files exactly as they were."""
    root = Path(venv).resolve() if venv else Path(sys.prefix)
    state_path = root / STATE
    if not state_path.exists():
        raise click.ClickException(f"auditwatch is not installed in {root} (no {STATE})")
    state = json.loads(state_path.read_text(encoding="utf-8"))
    bindir = root / "bin"
    for entry in state.get("replaced", []):
        path = bindir / entry["name"]
        if "symlink" in entry:
            tmp = bindir / f".{entry['name']}.restore"
            if os.path.lexists(tmp):
                tmp.unlink()
            os.symlink(entry["symlink"], tmp)
            os.replace(tmp, path)
        else:
            os.replace(entry["moved_to"], path)
    backup = root / BACKUP_DIR
    if backup.is_dir():
        backup.rmdir()  # empty now; anything left in it is not ours to delete
    (root / CONFIG).unlink(missing_ok=True)
    state_path.unlink()
    click.echo(f"auditwatch uninstalled from {root}", err=True)


command = install
