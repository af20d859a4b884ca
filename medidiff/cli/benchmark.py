"""`medidiff benchmark --config CONFIG`: degrade clean volumes, restore them with medidiff and classical
baselines, and score everything (tables in Markdown and CSV, one PNG montage per case)."""

from __future__ import annotations

import argparse
from typing import Any

from medidiff.cli.common import positive_int


def register(sub: Any) -> None:
    """Add the ``benchmark`` subcommand."""
    p = sub.add_parser(
        "benchmark",
        help="score medidiff against classical baselines on degraded clean volumes",
        description="Run a benchmark config (configs/bench/*.yaml): each case degrades a clean volume "
        "reproducibly, restores it with medidiff and the classical baselines (each timed, with its peak "
        "memory), and scores the outputs against the clean volume. Writes OUT/results.md, "
        "OUT/results.csv and OUT/montages/<case>.png. Finished work is reused on the next run; medidiff's "
        "results only while its model weights, task defaults and code are unchanged.",
    )
    p.add_argument("--config", required=True, metavar="CONFIG", help="benchmark YAML (configs/bench/*.yaml)")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: out/bench/<name>)")
    p.add_argument("--model", default=None, help="medidiff model: default or a path (default: the config's)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse finished cases and methods found in --out (default: yes)",
    )
    p.add_argument(
        "--cases", nargs="+", metavar="PATTERN", default=[], help="run only cases whose id matches a pattern"
    )
    p.add_argument(
        "--methods", metavar="LIST", default=None, help="comma-separated methods to run (default: all)"
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="medidiff network-evaluation budget override"
    )
    p.add_argument(
        "--isolation",
        choices=("subprocess", "inprocess"),
        default=None,
        help="run each method in a fresh process (exact peak RSS) or in this one (default: the config's)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # Before torch (and its OpenMP runtime) loads: with the default active wait, OpenMP threads spin at
    # every barrier, and on a machine whose cores are busy with other work a 2-thread network call was
    # measured 20-50 times slower than with 1 thread; passive waiting removes that and costs little on an
    # idle machine. The method workers inherit it. A value set by the user is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.runner import RunOptions, run_benchmark
    from medidiff.errors import MedidiffError
    from medidiff.progress import Progress

    Progress.set_quiet(args.quiet)
    config = load_config(args.config)
    out = Path(args.out) if args.out else Path("out") / "bench" / config.name
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    options = RunOptions(
        out=out,
        model=args.model,
        resume=args.resume,
        quiet=args.quiet,
        cases=list(args.cases),
        methods=methods,
        steps=args.steps,
        isolation=args.isolation,
    )
    summary = run_benchmark(config, options)
    if not args.quiet:
        cases = len({r["case"] for r in summary.rows})
        print(
            f"benchmark {config.name}: {cases} cases, {summary.ran} runs, {summary.reused} reused, "
            f"{summary.failed} failed; tables in {out / 'results.md'}"
        )
    if summary.failed:
        first = next(r for r in summary.rows if r.get("error"))
        example = f"{first['case']} {first['method']}: {first['error']}"
        raise MedidiffError(f"{summary.failed} benchmark runs failed, e.g. {example}")
    return 0
