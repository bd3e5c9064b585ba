"""The `giellm` command line: argument parsing only; every command calls the library."""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from typing import Annotated

import typer

from giellm.allocator import active_allocator, use_jemalloc
from giellm.cli import data_commands, model_commands
from giellm.errors import GiellmError
from giellm.progress import configure_logging, err_console, logger
from giellm.threads import configure_threads
from giellm.training.config import flags_help

app = typer.Typer(
    help="giellm: unified Japanese information extraction (TC, SA, NER, RE, EE, PAS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from giellm import __version__

        print(f"giellm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (default: the CPUs this process may use; "
            "OpenMP waits passively unless OMP_WAIT_POLICY is set)",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and stop"
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also debug messages: what loads, from where")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="warnings and errors only: no progress")
    ] = False,
) -> None:
    """giellm: unified Japanese information extraction (TC, SA, NER, RE, EE, PAS)."""
    if verbose and quiet:
        raise GiellmError("--verbose and --quiet: choose one")
    configure_logging(1 if verbose else -1 if quiet else 0)
    count = configure_threads(threads)  # runs before every command: before torch loads
    logger.debug(f"torch threads {count}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    use_jemalloc(ctx.invoked_subcommand)  # train, predict, serve, report: re-executes once
    logger.debug(f"malloc: {active_allocator()}")


for _command in (
    data_commands.convert,
    data_commands.evaluate,
    data_commands.datasets,
    data_commands.grammar,
    model_commands.extract,
    model_commands.predict,
    model_commands.report,
    model_commands.serve,
    model_commands.export,
):
    app.command()(_command)
# train takes every config setting as a flag too (generated from the config dataclasses)
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=flags_help(),
)(model_commands.train)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2."""
    # peft 0.21 reads an alias transformers 5 deprecated: noise for our users, not theirs to fix
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    try:
        app()
    except GiellmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as err:
        reason = full_disk(err)
        if reason is None:
            raise
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        print(
            f"error: {reason}{where}; free some space and run it again: nothing half-written "
            "is taken for done (predict resumes from OUT.partial, train --resume from its "
            "last complete checkpoint)",
            file=sys.stderr,
        )
        sys.exit(2)


def full_disk(err: BaseException) -> str | None:
    """The reason when `err` is a full disk, a quota or a file-size limit (an OSError, or a
    library's own error that carries the OS error, as safetensors' does), else None."""
    if isinstance(err, OSError):
        return err.strerror if err.errno in FULL else None
    found = re.search(r"\(os error (\d+)\)", str(err))
    if found and int(found.group(1)) in FULL:
        return os.strerror(int(found.group(1)))
    return None


# a full disk, a quota, a file-size limit: the machine's state, not a bug to show a traceback for
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
