"""``auditwatch verify STORE``: check that no record was changed, removed, inserted or moved."""

from __future__ import annotations

import click

from auditwatch.store.keys import StoreError
from auditwatch.store.verify import describe, verify


@click.command("verify")
@click.argument("store", type=click.Path(dir_okay=True))
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="The store's key file (default: STORE.key, next to the store).",
)
@click.option("-v", "--verbose", is_flag=True, help="List every problem found, not just the first.")
def command(store: str, key_path: str | None, verbose: bool) -> None:
    """Verify a record store's hash chain, MACs and sealed head.

    STORE is a store file or a run directory holding store.sqlite. Exit status: 0
    when intact, 1 when a problem was found (the first one is printed), 2 when the
    store or key could not be read.
    """
    try:
        report = verify(store, key_path)
    except StoreError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None
    lines = describe(report)
    if report.ok:
        click.echo(lines[0])
        return
    click.echo(click.style(lines[0], fg="red", bold=True))
    if verbose:
        for problem in report.problems[1:]:
            click.echo(f"  then: {problem.message}")
        hidden = report.problem_count - len(report.problems)
        if hidden > 0:
            click.echo(f"  … and {hidden} more")
    elif report.problem_count > 1:
        click.echo(f"({report.problem_count} problems in all; -v lists them)")
    raise SystemExit(1)
