"""The ``auditwatch`` command line: one click group, one module per command."""

from __future__ import annotations

import click

from auditwatch import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditwatch")
def main() -> None:
    """auditwatch: a flight recorder for Python processes (PEP 578 audit hooks).

    It records what Python code does; it is not a sandbox.
    """


def _register() -> None:
    # Each command lives in auditwatch/commands/<name>.py; importing them here keeps
    # `auditwatch --help` complete without a plugin mechanism.
    from auditwatch.commands import run

    main.add_command(run.command)
    from auditwatch.commands import events

    main.add_command(events.command)
    from auditwatch.commands import verify

    main.add_command(verify.command)
    from auditwatch.commands import export

    main.add_command(export.command)
    from auditwatch.commands import runs

    main.add_command(runs.command)
    from auditwatch.commands import query

    main.add_command(query.command)
    from auditwatch.commands import rules

    main.add_command(rules.command)
    from auditwatch.commands import collect

    main.add_command(collect.command)
    from auditwatch.commands import tail

    main.add_command(tail.command)
    from auditwatch.commands import report

    main.add_command(report.command)
    from auditwatch.commands import install

    main.add_command(install.install)
    main.add_command(install.uninstall)
    from auditwatch.commands import doctor

    main.add_command(doctor.command)
    from auditwatch.commands import code

    main.add_command(code.command)
    from auditwatch.commands import manifest

    main.add_command(manifest.command)


_register()
