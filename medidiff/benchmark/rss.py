"""Resident memory of this process, with the standard library only: its high-water mark and its current size.

On Linux both come from ``/proc/self``: ``VmHWM`` (the peak of this process's *own* address space) and the
resident page count of ``statm``. Elsewhere the only standard measure is ``ru_maxrss`` (the peak so far),
which then stands in for both: an upper bound of the current size (and NaN where even that is missing,
on Windows).
"""

from __future__ import annotations

import os
import sys
import threading


def _ru_maxrss_mib() -> float:
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")  # no standard measure: the tables leave the cell empty
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)  # bytes on macOS, else KiB


def peak_rss_mib() -> float:
    """This process's RSS high-water mark in MiB.

    On Linux this is ``VmHWM`` from /proc/self/status. ``ru_maxrss`` is not the same: the kernel carries it
    over exec, so a child started by a big parent (with vfork, as Python's subprocess does) reports at least
    the parent's RSS (measured: 12.1 GiB in every child of benchmarks/speed.py after the parent's own 96^3
    fp32 forward passes). Elsewhere, ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return _ru_maxrss_mib()


def current_rss_mib() -> float:
    """This process's resident size now, in MiB (without /proc: the peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _ru_maxrss_mib()


class RssSampler:
    """Samples this process's RSS in a thread: ``with RssSampler() as s: ...; s.peak_mib``.

    The maximum of the samples misses spikes shorter than ``interval`` and includes whatever the process
    already held; it measures a call made inside a bigger process, where the high-water mark of the whole
    process would mostly show its past.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mib = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_mib = max(self.peak_mib, current_rss_mib())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
