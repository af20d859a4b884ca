"""Shared plumbing of the docs generators: write a page, or check that the committed one is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def main(render: Callable[[], str], target: Path, argv: list[str] | None = None) -> int:
    """``python -m docs.gen_x [--check]``: write ``target`` from ``render()``, or with ``--check`` exit 1
    when the committed file differs (so a stale page fails loudly instead of drifting)."""
    parser = argparse.ArgumentParser(description=f"regenerate docs/{target.name}")
    parser.add_argument("--check", action="store_true", help="only check that the committed file is current")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            print(f"{target} is stale: run python -m docs.{Path(sys.argv[0]).stem}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0
