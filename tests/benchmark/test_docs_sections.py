"""benchmarks/ (dev-only, `make bench`) writes docs/benchmarks.md sections from the package's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import run_all
from benchmarks.docs_sections import config_section, replace_section
from medidiff.benchmark.config import load_config
from medidiff.benchmark.report import COLUMNS

REPO = Path(__file__).resolve().parents[2]


def test_replace_section_keeps_other_sections(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n\n<!-- cohort-throughput:start -->\nmine\n<!-- cohort-throughput:end -->\n")
    replace_section(doc, "quick", "table 1")
    replace_section(doc, "quick", "table 2")
    text = doc.read_text()
    assert text.count("<!-- quick:start -->") == 1 and "table 2" in text and "table 1" not in text
    assert "<!-- cohort-throughput:start -->\nmine\n<!-- cohort-throughput:end -->" in text


def test_config_section_of_a_repository_config(tiny_model: Path) -> None:
    config = load_config(REPO / "configs" / "bench" / "quick.yaml")
    rows: list[dict[str, Any]] = []
    for method, psnr in (("input", 20.0), ("medidiff", 30.0), ("bm4d", 29.0)):
        row: dict[str, Any] = {k: None for k in COLUMNS}
        row.update(case="sample__denoise-gaussian-5", volume="sample", label="MNI", degradation="d", error="")
        row.update(method=method, psnr=psnr, ssim=0.9, region="foreground", seconds=1.0)
        rows.append(row)
    text = config_section(config, rows, str(tiny_model), "img/bench/quick")
    assert text.startswith("## Quick benchmark on the bundled sample\n\n`medidiff benchmark --config ")
    assert "--config configs/bench/quick.yaml` (" in text
    assert "([montage](img/bench/quick/sample__denoise-gaussian-5.png))" in text
    assert "| **30.00** |" in text
    assert "within ±2 std" not in text  # no method reported a spread


def test_config_section_shows_the_uncertainty_calibration(tiny_model: Path) -> None:
    config = load_config(REPO / "configs" / "bench" / "quick.yaml")
    row: dict[str, Any] = {k: None for k in COLUMNS}
    row.update(case="sample__inpaint", volume="sample", label="MNI", degradation="inpaint", error="")
    row.update(method="medidiff", psnr=30.0, ssim=0.9, region="missing", seconds=1.0)
    row.update(coverage_1=0.7, coverage_2=0.953, coverage_3=0.996, std_error_corr=0.512)
    text = config_section(config, [row], str(tiny_model), "img/bench/quick")
    assert "| MNI: inpaint | medidiff | 70.0% | 95.3% | 99.6% | 0.51 |" in text
    assert text.index("within ±2 std") > text.index("| MNI: inpaint ([montage]")


def test_run_all_finds_the_marked_configs_and_the_scripts() -> None:
    assert [p.name for p in run_all.bench_configs()] == ["quick.yaml", "targets.yaml"]
    names = [p.stem for p in run_all.scripts()]
    assert "speed" in names and "cohort_throughput" in names
    assert "docs_sections" not in names and "run_all" not in names
