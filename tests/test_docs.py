"""The documentation: complete against the code, and the site builds without warnings.

The CLI reference is compared with the CLI's own structure (the click group and
every command's parameters), the configuration page with the option keys the native
code accepts and the environment variables the code reads, and the site is built
with ``mkdocs build --strict`` by the interpreter running the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from auditwatch.cli import main

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
HOOK_SOURCES = REPO / "src" / "auditwatch" / "_hook"


def commands(group: click.Command, path: tuple[str, ...] = ("auditwatch",)):
    """(command path, command) for the group and everything under it."""
    yield path, group
    if isinstance(group, click.Group):
        for name, sub in sorted(group.commands.items()):
            yield from commands(sub, (*path, name))


def sections(markdown: str) -> dict[str, str]:
    """Text under each heading that names a command: `auditwatch run` -> its section."""
    out: dict[str, str] = {}
    current = None
    for line in markdown.splitlines():
        heading = re.match(r"#+\s+`(auditwatch(?: [\w-]+)*)`\s*$", line)
        if heading:
            current = heading.group(1)
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def test_cli_reference_lists_every_command_and_option():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    by_command = sections(text)
    missing = []
    for path, cmd in commands(main):
        name = " ".join(path)
        if len(path) > 1 and name not in by_command:
            missing.append(f"section `{name}`")
            continue
        body = by_command.get(name, text)  # the group's own options: anywhere
        for param in cmd.params:
            if isinstance(param, click.Argument):
                if param.name.upper() not in body:
                    missing.append(f"{name}: argument {param.name.upper()}")
                continue
            for flag in (*param.opts, *param.secondary_opts):
                if f"`{flag}`" not in body:
                    missing.append(f"{name}: option {flag}")
    assert not missing, "docs/cli.md does not document:\n  " + "\n  ".join(missing)


def native_option_keys() -> list[str]:
    source = (HOOK_SOURCES / "install.c").read_text(encoding="utf-8")
    keys = re.findall(r'strcmp\(key,\s*"([a-z_]+)"\)', source)
    assert len(keys) >= 10, "parse_options() in install.c no longer looks as expected"
    return sorted(set(keys))


def environment_variables() -> list[str]:
    """AUDITWATCH_* variables the native code and the runtime read."""
    names: set[str] = set()
    files = [*HOOK_SOURCES.glob("*.c"), *(REPO / "src" / "auditwatch").glob("launcher/*.c")]
    files.append(REPO / "src" / "auditwatch" / "runtime.py")
    for file in files:
        text = file.read_text(encoding="utf-8")
        names.update(re.findall(r'getenv\("(AUDITWATCH_[A-Z_]+)"\)', text))
        names.update(re.findall(r'environ(?:\.get\(|\[)"(AUDITWATCH_[A-Z_]+)"', text))
    return sorted(names)


def test_configuration_page_lists_every_option_and_variable():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    missing = [f"option {key}" for key in native_option_keys() if f"`{key}`" not in text]
    variables = environment_variables()
    assert "AUDITWATCH_SINK" in variables and "AUDITWATCH_OPTIONS" in variables
    missing += [f"variable {name}" for name in variables if f"`{name}`" not in text]
    assert not missing, "docs/config.md does not document:\n  " + "\n  ".join(missing)


def test_default_event_table_is_documented():
    import _auditwatch

    text = re.sub(r"\s+", "", (DOCS / "config.md").read_text(encoding="utf-8"))
    assert _auditwatch.default_events() in text, "docs/config.md shows an old built-in event table"


def test_site_builds_without_warnings(tmp_path):
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail(
            "mkdocs is not installed: it is a test dependency (pip install 'mkdocs>=1.5', "
            "or install the package with its [test] extra)",
            pytrace=False,
        )
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "threat-model" / "index.html").exists()
