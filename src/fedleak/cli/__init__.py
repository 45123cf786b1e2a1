"""The ``fedleak`` command line: a thin layer over the Python API.

Exit codes: 0 done, 2 bad input (one line on stderr: what is wrong and what to do), 1 an internal error.
Heavy packages (torch, opacus, flwr) load inside the commands, so ``fedleak --help`` is instant.
"""

from __future__ import annotations

import math
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    import click
    import typer.main

    from fedleak.cli.app import app
    from fedleak.errors import FedleakInputError

    command = typer.main.get_command(app)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _refuse_non_finite(sys.argv[1:] if argv is None else [str(a) for a in argv])
        code = command.main(args=argv, prog_name="fedleak", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into an exit code it returns instead of raising
            print(_interrupted("interrupted", argv), file=sys.stderr)
            return 130
        if isinstance(code, int) and code:
            return code
    except Terminated:
        print(_interrupted("terminated (SIGTERM)", argv), file=sys.stderr)
        return 143
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
        print(_interrupted("interrupted", argv), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


PATH_OPTIONS = {"--out", "--dataset", "--weights"}  # names, not numbers: a folder may be called "inf"


def _refuse_non_finite(args: list[str]) -> None:
    """No option takes NaN or infinity: a number of iterations, a learning rate or a fraction that is not finite
    ("nan", "inf", or "1e999", which overflows to inf) is always a mistake, and would run to meaningless figures."""
    from fedleak.errors import FedleakInputError

    for i, a in enumerate(args):
        option, _, value = a.partition("=") if a.startswith("--") and "=" in a else (args[i - 1] if i else "", "", a)
        if not option.startswith("--") or option in PATH_OPTIONS:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if not math.isfinite(number):
            raise FedleakInputError(f"{option} {value}: must be a finite number")


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that it unwinds like Ctrl-C (no result file is half-written)."""


def _terminated(signum, frame) -> None:  # noqa: ANN001
    raise Terminated()


def _interrupted(what: str, argv: list[str] | None) -> str:
    """One line: what stopped the run, and how to continue it where that is possible."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = args[0] if args and not args[0].startswith("-") else ""
    if command in ("audit", "demo"):
        return f"{what}; finished stages are kept: `fedleak {command} ... --resume` with the same --out continues"
    return f"{what}; no results were written for the unfinished run"


def _subcommand(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return f"{args[0]} " if args and not args[0].startswith("-") else ""


if __name__ == "__main__":
    sys.exit(main())
