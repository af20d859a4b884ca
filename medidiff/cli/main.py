"""Entry point of the `medidiff` command: builds the parser from one module per subcommand.

Each subcommand module defines ``register(subparsers) -> None`` which adds its parser and sets
``handler`` to a function ``(args) -> int``. Modules import nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from medidiff import __version__

# Order shown in `medidiff --help`; a module is listed only once it exists.
COMMANDS = (
    "info",
    "restore",
    "restore_batch",
    "degrade",
    "metrics",
    "train",
    "sample",
    "benchmark",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``medidiff: error: ...``, exit code 2.

    argparse's default prints the usage block and prefixes subcommand errors with ``medidiff restore:``;
    front ends (the Slicer module, scripts) parse the one-line ``medidiff: error:`` form of every error.
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        hint = f" (see medidiff {command} --help)" if command else " (see medidiff --help)"
        self.exit(2, f"medidiff: error: {message}{hint}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the full `medidiff` parser (used by the CLI and by the docs' CLI reference)."""
    parser = OneLineParser(
        prog="medidiff",
        description="Restore 3D medical volumes with diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"medidiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module_name = f"medidiff.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 2 user error, 1 internal error, 141 when the reader
    of stdout went away, as for a tool killed by SIGPIPE)."""
    from medidiff.errors import MedidiffError

    # Before torch is imported: OpenMP threads that spin while waiting were measured 20-50x slower when the
    # cores are shared (a Slicer session, a second job); passive waiting costs little when they are not.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Tensors reuse freed heap memory instead of faulting in new pages (up to 1.5x faster; medidiff.memory).
    from medidiff.memory import retain_freed_memory

    retain_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("MEDIDIFF_DEBUG"))
    if not debug:
        warnings.filterwarnings("ignore")
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader that left early (`| head`) is met here, not at interpreter exit
        return code
    except BrokenPipeError:
        # Python ignores SIGPIPE, so `medidiff metrics ... | head -1` raises here; like other command-line
        # tools, stop quietly. Pointing stdout at devnull keeps the exit-time flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MedidiffError as exc:
        if debug:
            raise
        print(f"medidiff: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medidiff: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal bug: still one line unless debugging
        if debug:
            raise
        print(
            f"medidiff: internal error: {type(exc).__name__}: {exc} (set MEDIDIFF_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
