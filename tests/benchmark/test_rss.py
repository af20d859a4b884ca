"""Peak memory with the standard library: a benchmark child's figure is its own, not its parent's, and the
in-process sampler sees an allocation made while it runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from medidiff.benchmark.rss import RssSampler, current_rss_mib, peak_rss_mib


def test_a_child_of_a_big_parent_reports_its_own_peak() -> None:
    """ru_maxrss survives exec (a vfork'ed child reported the parent's 12 GiB); VmHWM does not."""
    ballast = np.ones(600 * 2**20 // 8)  # 600 MiB, touched
    assert peak_rss_mib() > 600
    code = "from medidiff.benchmark.rss import peak_rss_mib; print(peak_rss_mib())"
    child = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 5 < child < 400, child
    del ballast


def test_sampler_sees_a_transient_allocation() -> None:
    """200 MiB held for 50 ms inside the block (ten sampling intervals) and freed before it ends."""
    import time

    before = current_rss_mib()
    with RssSampler() as sampler:
        ballast = np.ones(200 * 2**20 // 8)
        time.sleep(0.05)
        del ballast
    assert sampler.peak_mib > before + 150
    assert current_rss_mib() < sampler.peak_mib


def test_no_dev_only_package_is_needed() -> None:
    """Every module of medidiff.benchmark imports, and the sampler runs, with bm4d and psutil unimportable
    (a fresh interpreter: this one may have imported them already)."""
    code = """
import importlib, pkgutil, sys
sys.modules["bm4d"] = None  # `import bm4d` now raises ImportError, as when it is not installed
sys.modules["psutil"] = None
import medidiff.benchmark as package
for info in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f"medidiff.benchmark.{info.name}")
from medidiff.benchmark.rss import RssSampler
with RssSampler() as sampler:
    pass
assert sampler.peak_mib > 0
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
