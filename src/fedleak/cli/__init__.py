"""The ``fedleak`` command line: a thin layer over the Python API.

Exit codes: 0 done, 2 bad input (one line on stderr: what is wrong and what to do), 1 an internal error.
Heavy packages (torch, opacus, flwr) load inside the commands, so ``fedleak --help`` is instant.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import click
    import typer.main

    from fedleak.cli.app import app
    from fedleak.errors import FedleakInputError

    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="fedleak", standalone_mode=False)
    except FedleakInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as e:  # usage errors: unknown option, bad value, missing argument
        msg = e.format_message().replace("\n", " ")
        print(f"error: {msg} (see `fedleak {_subcommand(argv)}--help`)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run files written so far are complete (use --resume where offered)", file=sys.stderr)
        return 130
    return 0


def _subcommand(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return f"{args[0]} " if args and not args[0].startswith("-") else ""


if __name__ == "__main__":
    sys.exit(main())
