"""``auditwatch rules``: check, test and list alert rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from auditwatch.collector.alerts import PRIORITY_STYLES

_rules_option = click.option(
    "--rules",
    "rule_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A rule file loaded after the defaults (repeatable).",
)
_no_default_option = click.option(
    "--no-default-rules", is_flag=True, help="Leave out the default ruleset."
)


@click.group(name="rules")
def command() -> None:
    """Check, test and list alert rules (Falco-style YAML; see docs/rules.md)."""


@command.command(name="lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--with-defaults",
    is_flag=True,
    help="Load the default ruleset first (for files that extend or override it).",
)
def lint_command(files: tuple[str, ...], with_defaults: bool) -> None:
    """Check rule files; print problems as file:line:column: message."""
    from auditwatch.rules import lint

    errors = lint(files, default=with_defaults)
    for err in errors:
        click.echo(str(err))
    if errors:
        click.echo(f"{len(errors)} problem{'s' if len(errors) != 1 else ''}", err=True)
        sys.exit(1)
    click.echo(f"{len(files)} file{'s' if len(files) != 1 else ''} ok", err=True)


@command.command(name="test")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@_rules_option
@_no_default_option
@click.option("-v", "--verbose", is_flag=True, help="Also list the rules each case checked.")
def test_command(
    files: tuple[str, ...], rule_files: tuple[str, ...], no_default_rules: bool, verbose: bool
) -> None:
    """Run rule test cases (records in, expected alerts out).

    With no FILE, runs the default ruleset's own tests.
    """
    from auditwatch.rules import RuleErrors, load
    from auditwatch.rules.testing import DEFAULT_TESTS, CaseError, run_files

    try:
        ruleset = load(rule_files, default=not no_default_rules)
    except RuleErrors as exc:
        for err in exc.errors:
            click.echo(str(err))
        sys.exit(1)
    paths = [Path(f) for f in files] or [DEFAULT_TESTS]
    try:
        report = run_files(ruleset, paths)
    except (CaseError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for failure in report.failures:
        click.echo(f"FAIL {failure}")
    if verbose:
        for name in sorted(set(report.fired) | set(report.quiet)):
            fired, quiet = report.fired.get(name, 0), report.quiet.get(name, 0)
            click.echo(f"  {name}: fired {fired}, quiet {quiet}")
    summary = f"{report.cases} cases, {report.checks} checks, {len(report.failures)} failed"
    click.echo(summary)
    if not report.ok:
        sys.exit(1)


@command.command(name="list")
@_rules_option
@_no_default_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
def list_command(rule_files: tuple[str, ...], no_default_rules: bool, as_json: bool) -> None:
    """List the rules in force: name, priority, tags, enabled, action."""
    from auditwatch.rules import RuleErrors, load

    try:
        ruleset = load(rule_files, default=not no_default_rules)
    except RuleErrors as exc:
        for err in exc.errors:
            click.echo(str(err))
        sys.exit(1)
    if as_json:
        for rule in ruleset.rules:
            entry = {
                "rule": rule.name,
                "desc": rule.desc,
                "priority": rule.priority,
                "tags": list(rule.tags),
                "enabled": rule.enabled,
                "action": rule.action,
                "mode": rule.mode,
                "events": sorted(rule.events) if rule.events is not None else None,
                "origin": rule.origin,
            }
            click.echo(json.dumps(entry, ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for header in ("rule", "priority", "tags", "enabled", "action"):
        table.add_column(header, overflow="fold")
    for rule in ruleset.rules:
        action = rule.action if rule.mode is None else f"{rule.action} ({rule.mode})"
        table.add_row(
            rule.name,
            f"[{PRIORITY_STYLES.get(rule.priority, '')}]{rule.priority}[/]",
            ", ".join(rule.tags),
            "yes" if rule.enabled else "[dim]no[/]",
            action,
        )
    console = Console()
    console.print(table)
    enabled = len(ruleset.enabled())
    console.print(f"{len(ruleset.rules)} rules, {enabled} enabled")
