"""`make bench`: every benchmark marked for it, then every other script in benchmarks/, then the docs.

1. Each ``configs/bench/*.yaml`` with ``make_bench: true`` runs through ``medidiff benchmark`` (resumable:
   outputs in ``out/bench/<name>``). Its montages are copied to ``docs/img/bench/<name>/`` and its table
   replaces the ``<!-- <name>:start -->`` ... ``<!-- <name>:end -->`` section of docs/benchmarks.md.
2. Each other ``benchmarks/*.py`` script runs as ``python benchmarks/<script>.py`` and writes its own
   section (``speed.py`` also gets ``--model``); ``docs_sections.py`` is their shared helper, not a script.

The ``medidiff`` package only writes into the output folder of a run; everything that touches docs/ is here.

Usage::

    .venv/bin/python -m benchmarks.run_all [--model default|PATH] [--only quick speed ...] [--out out/bench]

Exits 1 if any benchmark failed (the others still run and their sections are still written).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.docs_sections import DOC, IMAGES, ROOT, config_section, replace_section

CONFIGS = ROOT / "configs" / "bench"
SCRIPTS_WITH_MODEL = ("speed",)
NOT_SCRIPTS = ("run_all", "__init__", "docs_sections")


def bench_configs() -> list[Path]:
    """The benchmark configs marked ``make_bench: true``, sorted by name."""
    import yaml

    marked = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if raw.get("make_bench"):
            marked.append(path)
    return marked


def scripts() -> list[Path]:
    """The benchmark scripts (every module here but this one and the helpers)."""
    return [p for p in sorted(Path(__file__).parent.glob("*.py")) if p.stem not in NOT_SCRIPTS]


def run_config(path: Path, out: Path, model: str | None) -> bool:
    """Run one benchmark config and write its docs section; False if anything failed."""
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.report import read_csv

    config = load_config(path)
    target = out / config.name
    command = [sys.executable, "-m", "medidiff", "benchmark", "--config", str(path), "--out", str(target)]
    if model:
        command += ["--model", model]
    print(f"== benchmark {config.name}", flush=True)
    ok = subprocess.run(command, cwd=ROOT).returncode == 0
    results = target / "results.csv"
    if not results.exists():
        return False
    rows = read_csv(results)
    images = IMAGES / config.name
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for montage in sorted((target / "montages").glob("*.png")):
        shutil.copy2(montage, images / montage.name)
    relative = images.relative_to(DOC.parent).as_posix()
    replace_section(DOC, config.name, config_section(config, rows, model or config.model, relative))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run every `make bench` benchmark and update the docs")
    parser.add_argument("--model", default=None, help="medidiff model (default: each config's own)")
    parser.add_argument("--only", nargs="+", default=None, help="names of configs/scripts to run")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench", help="benchmark outputs")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    failed = []
    for path in bench_configs():
        selected = args.only is None or path.stem in args.only
        if selected and not run_config(path, args.out, args.model):
            failed.append(path.stem)
    for script in scripts():
        if args.only is not None and script.stem not in args.only:
            continue
        command = [sys.executable, str(script)]
        if args.model and script.stem in SCRIPTS_WITH_MODEL:
            command += ["--model", args.model]
        print(f"== {script.name}", flush=True)
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
