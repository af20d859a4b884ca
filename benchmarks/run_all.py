"""`make bench`: every benchmark marked for it, then every other script in benchmarks/, then the docs.

1. Each ``configs/bench/*.yaml`` with ``make_bench: true`` runs through ``medidiff benchmark`` (resumable:
   outputs in ``out/bench/<name>``). Its montages are copied to ``docs/img/bench/<name>/`` and its table
   replaces the ``<!-- <name>:start -->`` ... ``<!-- <name>:end -->`` section of docs/benchmarks.md.
2. Each other ``benchmarks/*.py`` script runs as ``python benchmarks/<script>.py`` and writes its own
   section (``speed.py`` also gets ``--model``).

Usage::

    .venv/bin/python -m benchmarks.run_all [--model default|PATH] [--only quick speed ...] [--out out/bench]

Exits 1 if any benchmark failed (the others still run and their sections are still written).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img" / "bench"
SCRIPTS_WITH_MODEL = ("speed",)


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
    """The benchmark scripts other than this one."""
    return [p for p in sorted(Path(__file__).parent.glob("*.py")) if p.stem not in ("run_all", "__init__")]


def run_config(path: Path, out: Path, model: str | None) -> bool:
    """Run one benchmark config and write its docs section; False if anything failed."""
    from medidiff.benchmark.config import load_config
    from medidiff.benchmark.report import docs_section, replace_section

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
    with results.open() as handle:
        rows: list[dict[str, object]] = []
        for row in csv.DictReader(handle):
            parsed: dict[str, object] = dict(row)
            for key in ("psnr", "ssim", "psnr_region", "psnr_fit", "seconds", "peak_rss_mib"):
                parsed[key] = float(row[key]) if row[key] not in ("", None) else None
            parsed["network_evaluations"] = int(row["network_evaluations"] or 0)
            rows.append(parsed)
    images = IMAGES / config.name
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for montage in sorted((target / "montages").glob("*.png")):
        shutil.copy2(montage, images / montage.name)
    relative = images.relative_to(DOC.parent).as_posix()
    replace_section(DOC, config.name, docs_section(config, rows, model or config.model, relative))
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
