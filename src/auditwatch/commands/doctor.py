"""``auditwatch doctor``: how this environment is audited, and what is not covered."""

from __future__ import annotations

import filecmp
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import click

from auditwatch.commands.install import CONFIG, LAUNCHER, STATE, python_names

# What auditwatch.pth's one line imports, beside it in site-packages.
BOOT_MODULE = "_auditwatch_boot.py"


def _probe(python: Path, env: dict[str, str]) -> dict:
    """What a plain start of the environment's python reports about its hook."""
    program = (
        "import json, sys\n"
        "try:\n"
        "    import _auditwatch\n"
        "    s = _auditwatch.status()\n"
        "except Exception as e:\n"
        "    s = {'installed': None, 'error': str(e)}\n"
        "print(json.dumps({'installed': s.get('installed'), 'error': s.get('error'),"
        " 'executable': sys.executable}))\n"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", program], capture_output=True, text=True, env=env, timeout=60
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        return {"installed": None, "error": str(exc)}


def diagnose(root: Path) -> dict:
    bindir = root / "bin"
    launcher = bindir / LAUNCHER
    pth = glob.glob(str(root / "lib*" / "python*" / "site-packages" / "auditwatch.pth"))
    # The .pth line only imports this module, which decides and loads the recorder.
    boot = [str(Path(p).parent / BOOT_MODULE) for p in pth]
    boot_missing = [b for b in boot if not os.path.exists(b)]
    # Without its bytecode cached, every start-up that cannot write it compiles the
    # module: about 11M instructions (docs/deployment.md).
    boot_compiled = bool(boot) and all(
        glob.glob(str(Path(b).parent / "__pycache__" / f"{Path(b).stem}.*.pyc")) for b in boot
    )
    config = root / CONFIG
    state = json.loads((root / STATE).read_text()) if (root / STATE).exists() else None
    python = bindir / "python"
    python_is_launcher = (
        launcher.is_file() and python.exists() and filecmp.cmp(python, launcher, shallow=False)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    probe = _probe(python, env) if python.exists() else {"installed": None}
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("AUDITWATCH_")}
    try:
        import _auditwatch

        this_process = _auditwatch.status().get("installed")
    except ImportError:
        this_process = None
    if boot_missing:
        how = (
            f"broken: {boot_missing[0]}, which auditwatch.pth imports, is missing: every "
            "start-up prints an error for the line and is not audited from site; "
            "reinstall auditwatch (pip install --force-reinstall auditwatch)"
        )
    elif python_is_launcher and config.exists():
        how = "always on, launcher: hooks installed before Py_Initialize (installed: pre-init)"
    elif config.exists():
        how = "always on, site: the .pth bootstrap installs the hook at site start-up"
    elif pth:
        how = "on demand: audited when AUDITWATCH_SINK is set (auditwatch run, the environment)"
    else:
        how = "not installed: auditwatch.pth is missing from site-packages"
    covered = []
    not_covered = [
        "non-Python programs started by audited processes: their start is recorded, "
        "their actions are not",
        "native code (C extensions, ctypes) once it runs: it can act without audit events "
        "and can disable in-process hooks; what came before is on record",
        "other Python interpreters and environments on this machine",
    ]
    if python_is_launcher and config.exists():
        covered += [
            f"every start of {bindir}/python (and {', '.join(python_names()[1:])}), "
            "including -S, -I, -E and scrubbed environments",
            "start-up: site, .pth files, sitecustomize, PYTHONSTARTUP (installed: pre-init)",
            "code provenance: every file opened as code (path, size, sha256), the main "
            "script, compiled strings",
        ]
        not_covered.append(
            f"the base interpreter this environment was made from, run directly "
            f"({sys.base_prefix}/bin/python...)"
        )
    elif config.exists():
        covered.append(f"every start of {bindir}/python that runs site (not -S)")
        not_covered += [
            "children started with python -S: site (and the bootstrap) does not run",
            "start-up before site runs the bootstrap: site itself, earlier .pth files",
            "files opened as code before the bootstrap (the open-code hook is set at "
            "site start-up, after site itself and earlier .pth files)",
        ]
    elif pth:
        covered.append("Python processes started with AUDITWATCH_SINK in their environment")
        not_covered += [
            "anything started without AUDITWATCH_SINK (scrubbed environments, -E/-I "
            "do not matter: it is the variable that counts), and python -S",
        ]
    try:
        from auditwatch import _ingest

        sealing = _ingest.SHA256
    except ImportError:
        sealing = None
    return {
        "environment": str(root),
        "python": sys.version.split()[0],
        "how": how,
        "pth": pth[0] if pth else None,
        "boot_module": boot[0] if boot and not boot_missing else None,
        "boot_module_compiled": boot_compiled,
        "launcher": str(launcher) if launcher.is_file() else None,
        "python_is_launcher": python_is_launcher,
        "config": str(config) if config.exists() else None,
        "install_state": state,
        "environment_variables": env_vars,
        "this_process": this_process,
        # The collector's SHA-256: libcrypto's ("openssl") seals faster than the
        # portable one ("builtin"); docs/performance.md.
        "collector_sha256": sealing,
        "new_process": probe,
        "covered": covered,
        "not_covered": not_covered,
    }


_SEALING = {
    "openssl": "libcrypto's SHA-256 (OpenSSL)",
    "builtin": "the portable SHA-256 (the build found no libcrypto; slower, docs/performance.md)",
    None: "nothing: auditwatch._ingest is missing (a broken install)",
}


@click.command("doctor")
@click.option("--venv", type=click.Path(exists=True, file_okay=False), help="Default: this one.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
def command(venv: str | None, as_json: bool) -> None:
    """How the hook is installed here, what is covered and what is not."""
    root = Path(venv).resolve() if venv else Path(sys.prefix)
    d = diagnose(root)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"environment: {d['environment']} (Python {d['python']})")
    click.echo(f"how:         {d['how']}")
    boot = d["boot_module"] or "its module: missing"
    click.echo(f"bootstrap:   {d['pth'] or 'missing'} (imports {boot})")
    click.echo(
        f"launcher:    {d['launcher'] or 'missing'}"
        + (" (is bin/python)" if d["python_is_launcher"] else "")
    )
    click.echo(f"config:      {d['config'] or 'none'}")
    click.echo(f"new process: installed={d['new_process'].get('installed')}")
    click.echo(f"this process: installed={d['this_process']}")
    click.echo(f"collector:   seals with {_SEALING.get(d['collector_sha256'], 'nothing')}")
    if d["environment_variables"]:
        click.echo("environment: " + ", ".join(sorted(d["environment_variables"])))
    click.echo("covered:")
    for line in d["covered"]:
        click.echo(f"  + {line}")
    click.echo("not covered:")
    for line in d["not_covered"]:
        click.echo(f"  - {line}")
    if d["boot_module"] and not d["boot_module_compiled"]:
        click.echo(
            f"note: {d['boot_module']} has no compiled bytecode in __pycache__: a start-up "
            "that cannot write it compiles the module, about 11M instructions each time; "
            f"compile it once: python -m compileall {d['boot_module']}"
        )
