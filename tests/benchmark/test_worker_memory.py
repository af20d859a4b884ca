"""The peak-memory figure of a benchmark child is its own, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from medidiff.benchmark.worker import peak_rss_mib


def test_a_child_of_a_big_parent_reports_its_own_peak() -> None:
    """ru_maxrss survives exec (a vfork'ed child reported the parent's 12 GiB); VmHWM does not."""
    ballast = np.ones(600 * 2**20 // 8)  # 600 MiB, touched
    assert peak_rss_mib() > 600
    code = "from medidiff.benchmark.worker import peak_rss_mib; print(peak_rss_mib())"
    child = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 5 < child < 400, child
    del ballast
