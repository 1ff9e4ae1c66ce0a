"""The `dit-workbench` command line: one typer app, a module per command group."""

from __future__ import annotations

import sys

import typer

from engine import __version__
from engine.core.errors import UserError, one_line


def _tidy_help() -> None:
    """`--help` pages that read well: a flag shows no `<bool>` (it takes no value), arguments are
    named in capitals (`CKPT`, and `CKPT` rather than `{ckpt}` on the usage line), and help texts
    wrap to the terminal instead of keeping the line breaks of the source."""
    import re

    from typer import core, rich_utils

    if getattr(core, "_dit_tidy", False):
        return
    core._dit_tidy = True
    show_type = core.TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        return show_type(self, ctx)

    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def usage_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def fix_linebreaks(paragraphs, markup_mode) -> str:
        # a paragraph's single line breaks are source wrapping; indented lines (examples) stay
        out = []
        for p in paragraphs:
            if p.startswith("\b") or re.search(r"\n\s", p):
                out.append(p.replace("\b\n", ""))
            else:
                out.append(" ".join(line.strip() for line in p.splitlines()))
        return "\n\n".join(out)

    core.TyperOption.display_type_rich = display_type_rich
    core.TyperArgument.display_name_raw = property(display_name_raw)
    core.TyperArgument._usage_display_name = usage_name
    rich_utils._fix_linebreaks = fix_linebreaks


_tidy_help()

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
    app.add_typer(engine.engine_app, name="engine")
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
    from workbench.commands import emergence

    app.command("emergence")(emergence.emergence)
    from workbench.commands import pretrained

    app.command("import-pipeline")(pretrained.import_pipeline)


def _note_csv_safety() -> None:
    """Every `--format` option (table, csv or json) says how CSV formula cells are written
    (one place, so a new command cannot forget it)."""
    import inspect

    from workbench.output import CSV_NOTE

    def callbacks(t: typer.Typer):
        for c in t.registered_commands:
            yield c.callback
        for g in t.registered_groups:
            yield from callbacks(g.typer_instance)

    for fn in callbacks(app):
        for p in inspect.signature(fn).parameters.values():
            info = p.default
            if not isinstance(info, typer.models.OptionInfo) or p.name != "format":
                continue
            if CSV_NOTE not in (info.help or ""):  # every Format offers csv
                info.help = f"{(info.help or '').rstrip()} {CSV_NOTE}".strip()


_register()
_note_csv_safety()


_terminated = False


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (kill, a scheduler's timeout) cleans up as ctrl+c does: it is raised as a
    KeyboardInterrupt, so staged folders and temp files are removed on the way out."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _interrupted() -> None:
    if _terminated:
        print("terminated; nothing half-written was kept", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process
    print("interrupted; nothing half-written was kept", file=sys.stderr)
    sys.exit(130)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = app(standalone_mode=False)
        # Outside standalone mode typer *returns* the code of a `typer.Exit` raised in a command
        # (`jobs watch` on a failed job) and turns ctrl+c into a returned 130: without this the
        # process would exit 0, silently.
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                _interrupted()
            sys.exit(code)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        if _terminated:
            _interrupted()
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # click usage errors
        if isinstance(e, _click_exceptions()):
            if str(e.format_message()).strip():  # empty: a group's help was already shown
                print(f"error: {_usage_message(e)}", file=sys.stderr)
            sys.exit(e.exit_code)
        raise


def _click_exceptions() -> tuple[type, ...]:
    """Usage-error types: recent typer raises those of its vendored click (typer._click),
    which are not `click.ClickException`s, so both are caught (else a traceback escapes)."""
    types: list[type] = []
    try:
        from typer._click.exceptions import ClickException as Vendored

        types.append(Vendored)
    except ImportError:
        pass
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _usage_message(e) -> str:
    """One line: click's message and where the command's options are listed."""
    msg = " ".join(str(e.format_message()).split()).rstrip(".")
    words, ctx = [], getattr(e, "ctx", None)
    while ctx is not None and ctx.parent is not None:  # the root's name is the program's
        words.insert(0, ctx.info_name)
        ctx = ctx.parent
    return f"{msg}; see `dit-workbench {' '.join([*words, '--help'])}`"


if __name__ == "__main__":
    main()
