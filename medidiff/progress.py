"""Progress reporting shared by all long commands.

On a TTY a tqdm bar is shown. Otherwise, unless quiet, machine-readable lines are written to stderr::

    medidiff-progress <stage> <done>/<total>

The 3D Slicer module (and any other front end) parses these lines; keep the format stable.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

PROGRESS_PREFIX = "medidiff-progress"


class Progress:
    """A progress counter for one stage: ``with Progress(total, "denoise") as p: p.update()``."""

    _quiet_default = False

    def __init__(self, total: int, stage: str, quiet: bool | None = None, min_interval: float = 0.2) -> None:
        self.total = max(int(total), 1)
        self.stage = stage.replace(" ", "_")
        self.done = 0
        self.quiet = Progress._quiet_default if quiet is None else quiet
        self.min_interval = min_interval
        self._last = 0.0
        self._bar: Any = None
        if not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=stage, leave=False, file=sys.stderr)

    @classmethod
    def set_quiet(cls, quiet: bool) -> None:
        """Set the process-wide default (the CLI's ``--quiet``)."""
        cls._quiet_default = quiet

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.done == self.total or now - self._last >= self.min_interval:
            self._last = now
            print(f"{PROGRESS_PREFIX} {self.stage} {self.done}/{self.total}", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
