"""Options shared by more than one command."""

from __future__ import annotations

from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def rule_options(func: F) -> F:
    """--rules FILE (repeatable) and --no-default-rules, as run and collect take them."""
    func = click.option("--no-default-rules", is_flag=True, help="Leave out the default ruleset.")(
        func
    )
    return click.option(
        "--rules",
        "rule_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="A rule file loaded after the default ruleset (repeatable).",
    )(func)
