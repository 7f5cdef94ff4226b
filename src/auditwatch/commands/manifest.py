"""``auditwatch manifest build``: the hashes of every file an environment may open as
code, for the verified-code policy (docs/launcher.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

CODE_SUFFIXES = (".py", ".pyc", ".pth", ".zip", ".egg", ".whl", ".pyz")
PATHS_PROGRAM = (
    "import json, sys, sysconfig; p = sysconfig.get_paths(); "
    "print(json.dumps({'roots': [p[k] for k in ('stdlib', 'platstdlib', 'purelib', 'platlib')]"
    " + [e for e in sys.path if e], 'version': sys.version, 'prefix': sys.prefix}))"
)


def environment_paths(python: str) -> dict:
    """Where the environment's interpreter finds code (-I: no user site, no PYTHON*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    out = subprocess.run(
        [python, "-I", "-c", PATHS_PROGRAM], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def sha256_file(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def code_files(roots: list[str]) -> list[str]:
    seen: set[str] = set()
    found: list[str] = []
    for root in roots:
        root = os.path.abspath(root)
        if os.path.isfile(root):
            candidates = [root]
        elif os.path.isdir(root):
            candidates = []
            for dirpath, _dirs, files in os.walk(root):
                candidates += [os.path.join(dirpath, f) for f in files if f.endswith(CODE_SUFFIXES)]
        else:
            continue
        for path in candidates:
            if path not in seen and os.path.isfile(path):
                seen.add(path)
                found.append(path)
    return sorted(found)


def build_manifest(python: str, include: tuple[str, ...] = ()) -> dict:
    info = environment_paths(python)
    roots = [*info["roots"], *include]
    files = []
    for path in code_files(roots):
        try:
            size, digest = sha256_file(path)
        except OSError:
            continue
        files.append({"path": path, "size": size, "sha256": digest})
    return {
        "auditwatch_manifest": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": info["version"],
        "prefix": info["prefix"],
        "roots": sorted({os.path.abspath(r) for r in roots}),
        "files": files,
    }


@click.group("manifest")
def command() -> None:
    """Manifests of code files for the verified-code policy."""


@command.command("build")
@click.option(
    "--venv",
    type=click.Path(exists=True, file_okay=False),
    help="The environment (default: this one).",
)
@click.option(
    "--include",
    multiple=True,
    type=click.Path(exists=True),
    help="Also hash the code files under this directory or this file (repeatable).",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def build(venv: str | None, include: tuple[str, ...], output: str) -> None:
    """Hash every .py, .pyc, .pth and archive the environment's Python can import.

    The manifest lists the standard library, site-packages, sys.path and --include
    paths. Files compiled later (new __pycache__ files) are not in it: the launcher
    refuses them and CPython falls back to the source, which is.
    """
    python = str(Path(venv) / "bin" / "python") if venv else sys.executable
    try:
        manifest = build_manifest(python, include)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        raise click.ClickException(f"cannot read the environment of {python}: {exc}") from None
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, output)
    click.echo(f"{len(manifest['files'])} files hashed into {output}", err=True)
