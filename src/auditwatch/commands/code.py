"""``auditwatch code RUNDIR``: every piece of code that ran, and where it came from."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from auditwatch.commands.runs import plain_table_with

ORIGINS = ("file", "zip", "frozen", "string", "memory")
HEADERS = ["origin", "code", "from", "sha256", "run"]


def load_provenance(rundir: Path) -> dict[str, Any]:
    path = rundir / "codes" / "provenance.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise click.ClickException(
            f"{path}: no code provenance here; give the run directory that "
            "`auditwatch run` printed (OUT/<run>)"
        ) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: cannot be read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("executed"), list):
        raise click.ClickException(f"{path}: not a provenance file (no 'executed' list)")
    return data


def source_of(item: dict[str, Any]) -> str:
    """Where the code object's code came from, in a few words."""
    origin = item.get("origin")
    if origin == "file":
        return str(item.get("read", ""))
    if origin == "zip":
        return f"{item.get('archive', '')} ({str(item.get('archive_sha256', ''))[:12]})"
    if origin == "string":
        if item.get("text_sha256"):
            return f"text {str(item['text_sha256'])[:12]}"
        candidates = item.get("text_candidates") or []
        return f"one of {len(candidates)} texts compiled as {item.get('file', '')}"
    if origin == "frozen":
        return "frozen into the interpreter"
    return "no code read and no text recorded"


def rows_of(data: dict[str, Any], origin: str | None) -> list[list[str]]:
    rows = []
    for item in data["executed"]:
        if origin and item.get("origin") != origin:
            continue
        name = str(item.get("name", ""))
        code = f"{item.get('file', '')}" + (f" {name}" if name and name != "<module>" else "")
        rows.append(
            [
                str(item.get("origin", "?")),
                code,
                source_of(item),
                str(item.get("sha256", ""))[:12],
                str(item.get("run", ""))[:8],
            ]
        )
    return rows


@click.command("code")
@click.argument("rundir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--origin", type=click.Choice(ORIGINS), help="Only code of this origin.")
@click.option(
    "--text",
    "text_sha",
    metavar="SHA256",
    help="Print a stored text (a compiled string, -c command or stdin script) by its "
    "hash or a unique prefix of it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print codes/provenance.json as JSON.")
def command(rundir: Path, origin: str | None, text_sha: str | None, as_json: bool) -> None:
    """Every code object that ran in a run, and where its code came from.

    RUNDIR is a run directory of `auditwatch run`. Origins: file (with the file
    read through the open-code hook: the .pyc or the source), zip (with the
    archive), frozen, string (with the text, kept in RUNDIR/codes/), memory (no
    code read and no text recorded: built by hand, or read before the hook).
    """
    if text_sha:
        show_text(rundir, text_sha)
        return
    data = load_provenance(rundir)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = rows_of(data, origin)
    if not rows:
        click.echo("no code on record" + (f" of origin {origin}" if origin else ""))
        return
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        for h in HEADERS:
            table.add_column(h, overflow="fold" if h in ("code", "from") else "ellipsis")
        for r in rows:
            table.add_row(*r, style="yellow" if r[0] in ("string", "memory") else None)
        Console().print(table)
    else:
        click.echo(plain_table_with(HEADERS, rows, right=set()))
    without = data.get("imports_without_code_read") or []
    if without and not origin:
        counts = Counter(m.get("how", "?") for m in without)
        what = ", ".join(f"{n} {how}" for how, n in sorted(counts.items()))
        click.echo(f"\nimports that read no code through the hook: {what}")


def show_text(rundir: Path, prefix: str) -> None:
    codes = rundir / "codes"
    prefix = prefix.lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise click.BadParameter("a sha256 in hex, or a prefix of one", param_hint="--text")
    matches = sorted(p for p in codes.glob(f"{prefix}*") if len(p.name) == 64)
    if not matches:
        raise click.ClickException(
            f"no stored text in {codes} starts with {prefix} (texts cut by the hook or "
            "larger than the store's cap are listed in codes/index.jsonl, not stored)"
        )
    if len(matches) > 1:
        raise click.ClickException(f"{prefix} matches {len(matches)} texts; give more of the hash")
    sys.stdout.buffer.write(matches[0].read_bytes())
