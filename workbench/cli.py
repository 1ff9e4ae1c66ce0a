"""The `dit-workbench` command line: one typer app, a module per command group."""

from __future__ import annotations

import sys

import typer

from engine import __version__
from engine.errors import UserError

app = typer.Typer(
    name="dit-workbench",
    help="Find and test the attention heads that draw spatial relations in diffusion transformers.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"dit-workbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    """Find and test the attention heads that draw spatial relations in diffusion transformers.

    With no command, opens the workbench (the Textual app) on ./checkpoints.
    """
    if ctx.invoked_subcommand is None:
        from workbench.commands.tui import open_workbench

        open_workbench()


def _register() -> None:
    from workbench.commands import dataset, engine, evaluate, model

    app.add_typer(dataset.app, name="dataset")
    app.command("evaluate")(evaluate.evaluate)
    app.command("train")(model.train)
    app.command("sample")(model.sample)
    app.command("info")(model.info)
    app.command("export")(model.export)
    app.command("serve")(engine.serve)
    app.add_typer(engine.jobs_app, name="jobs")
    from workbench.commands import curves, probe

    app.command("synopsis")(probe.synopsis)
    app.command("heads")(probe.heads)
    from workbench.commands import report, tui

    app.command("tui")(tui.tui)

    app.command("report")(report.report)

    app.command("curves")(curves.curves)
    from workbench.commands import intervene

    app.command("ablate")(intervene.ablate)
    app.command("variance")(intervene.variance)
    from workbench.commands import screen

    app.command("screen")(screen.screen)


_register()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
