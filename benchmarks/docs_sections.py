"""docs/benchmarks.md is made of sections, each written by one benchmark between its markers.

A section is the text between ``<!-- name:start -->`` and ``<!-- name:end -->``; :func:`replace_section`
rewrites one and leaves the rest of the page alone. :func:`config_section` renders a ``medidiff benchmark``
run (its config and its ``results.csv`` rows) as such a section, with the package's own tables.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from medidiff.benchmark.config import BenchConfig
from medidiff.benchmark.report import (
    calibration_table,
    check_targets,
    machine_line,
    markdown_table,
    targets_table,
)
from medidiff.fsutil import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img" / "bench"


def replace_section(document: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``document`` (the
    section is appended when absent). Other sections are left untouched."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = document.read_text() if document.exists() else ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n"
    document.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(document) as tmp:
        tmp.write_text(text)


def _command(config: BenchConfig) -> str:
    """The command that reproduces the run, with the config path as seen from the repository root."""
    source = Path(config.source) if config.source else Path(f"{config.name}.yaml")
    try:
        shown = source.resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a config outside the repository: its name is all a reader can use
        shown = source.name
    return f"medidiff benchmark --config {shown}"


def config_section(config: BenchConfig, rows: list[dict[str, Any]], model: str, image_dir: str) -> str:
    """The docs/benchmarks.md section of a benchmark run: what it measures, the table, the uncertainty maps'
    calibration (when a method reports one), the targets.

    Args:
        config: the benchmark.
        rows: its result rows (``medidiff.benchmark.report.read_csv`` of its results.csv).
        model: the medidiff model used.
        image_dir: where its montages were copied, relative to docs/ (links in the table).
    """
    links = {r["case"]: f"{image_dir}/{r['case']}.png" for r in rows}
    lines = [
        f"## {config.title or config.name}",
        "",
        f"`{_command(config)}` ({time.strftime('%Y-%m-%d')}). " + machine_line(model),
        "",
    ]
    if config.description:
        lines += [config.description.strip(), ""]
    text = "\n".join(lines).rstrip() + "\n\n" + markdown_table(rows, links)
    calibrated = calibration_table(rows)
    if calibrated:
        text += "\nThe uncertainty maps (`--samples K --uncertainty`), calibrated as the model card says:\n\n"
        text += calibrated
    checks = check_targets(config, rows)
    if checks:
        met = sum(c["passed"] for c in checks)
        text += f"\nTargets met: {met} of {len(checks)}.\n\n" + targets_table(checks)
    return text
