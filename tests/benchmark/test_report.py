"""results.csv written by the package reads back into the same rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from medidiff.benchmark.report import COLUMNS, csv_text, read_csv
from medidiff.errors import InputError


def _row(method: str, psnr: float | None, error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {k: "" for k in COLUMNS}
    row.update(case="v__d", volume="v", degradation="d", task="denoise", method=method, region="foreground")
    row.update(psnr=psnr, ssim=None if psnr is None else 0.5, psnr_region=None, psnr_fit=None)
    row.update(seconds=1.25, network_evaluations=2, peak_rss_mib=300.5, error=error)
    return row


def test_read_csv_round_trip(tmp_path: Path) -> None:
    rows = [_row("medidiff", 31.123456789), _row("tv", math.inf), _row("bm4d", None, "bm4d failed: x")]
    path = tmp_path / "results.csv"
    path.write_text(csv_text(rows))
    back = read_csv(path)
    assert [r["method"] for r in back] == ["medidiff", "tv", "bm4d"]
    assert back[0]["psnr"] == 31.123456789 and back[0]["psnr_region"] is None
    assert back[1]["psnr"] == math.inf and back[0]["network_evaluations"] == 2
    assert back[2]["psnr"] is None and back[2]["error"] == "bm4d failed: x"


def test_read_csv_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a benchmark results table"):
        read_csv(other)
    with pytest.raises(InputError, match="cannot read benchmark results"):
        read_csv(tmp_path / "absent.csv")
