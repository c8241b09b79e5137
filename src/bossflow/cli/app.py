"""The ``bossflow`` command: the top-level parser, one subcommand per module, errors as one line.

Bad input prints one line ``bossflow: error: ...`` and exits with status 2. Every command
module's docstring is its ``--help`` description (or its ``DESCRIPTION``, where that is
computed); it has ``HELP``, ``EXAMPLES``, ``add_arguments(parser)`` and ``run(args) -> int``; torch is imported only by ``run``, so ``bossflow --help`` and
``bossflow CMD --help`` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from typing import Any, Sequence

from ..core._allocator import keep_freed_memory
from ..core.errors import BossflowError
from . import bench, demo, evaluate, export, sample, schedule, straighten, teacher
from ._args import Parser

COMMANDS = {"schedule": schedule, "demo": demo, "bench": bench, "evaluate": evaluate, "teacher": teacher,
            "straighten": straighten, "sample": sample, "export": export}
"""Subcommand name -> its module, in ``--help`` order."""


def add_subcommand(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """Add command ``name`` (a key of :data:`COMMANDS`) to ``subparsers``, with its options, and return its parser."""
    module = COMMANDS[name]
    description = getattr(module, "DESCRIPTION", module.__doc__)
    parser = subparsers.add_parser(name, help=module.HELP, description=description, epilog=module.EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bossflow",
        description="Few-step sampling schedules for flow-matching models (BOSS, ICLR 2024).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        add_subcommand(sub, name)
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Any:
    """Treat SIGTERM (``kill``, schedulers' pre-emption) like Ctrl-C: long jobs keep their last checkpoint.

    Background jobs started from a non-interactive shell ignore SIGINT, so SIGTERM is how they are
    stopped. Returns the previous handler (``None`` off the main thread), restored when ``main`` ends.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output option of the command (its ``OUTPUTS``) that cannot be written.

    Only rank 0 probes under torchrun: the probe creates and removes folders, which ranks would race on.
    """
    if os.environ.get("RANK", "0") not in ("", "0"):
        return
    from ..core._io import check_writable

    for name, kind in getattr(COMMANDS[args.command], "OUTPUTS", {}).items():
        value = getattr(args, name, None)
        if value:
            check_writable(value, kind=kind, option=f"--{name.replace('_', '-')}")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bossflow`` command. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs it; rank 0 prints and writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    previous_sigterm = _stop_on_sigterm()
    joined = False
    where = ""
    try:
        check_outputs(args)
        if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:
            from ..core.distributed import init_from_env, rank

            joined = init_from_env()
            where = f" (rank {rank()})" if rank() else ""
        with contextlib.redirect_stdout(io.StringIO()) if where else contextlib.nullcontext():
            return COMMANDS[args.command].run(args)
    except BossflowError as exc:
        print(f"bossflow: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bossflow: interrupted; finished batches are kept in --cache when one was given.", file=sys.stderr)
        return 130
    except Exception as exc:  # a model or library failure: one line, the traceback on request
        if os.environ.get("BOSSFLOW_DEBUG"):
            raise
        print(
            f"bossflow: error{where}: {type(exc).__name__}: {exc} (set BOSSFLOW_DEBUG=1 for the traceback)".replace("\n", " "),
            file=sys.stderr,
        )
        return 1
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)
        if joined:
            from ..core.distributed import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
