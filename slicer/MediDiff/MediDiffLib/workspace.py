"""The temporary folder one restoration exchanges its files through.

The input (and mask) go to medidiff as NRRD files and the results come back as NRRD files: NRRD carries the
voxel grid's geometry, so the module needs no affine code, and Slicer reads and writes it natively.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """A private temporary folder with fixed file names for one run."""

    directory: Path

    @classmethod
    def create(cls, parent: str | Path | None = None) -> Workspace:
        """Create a fresh folder (under ``parent``, for example ``slicer.app.temporaryPath``)."""
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix="MediDiff-", dir=None if parent is None else str(parent))))

    @property
    def input_path(self) -> Path:
        return self.directory / "input.nrrd"

    @property
    def mask_path(self) -> Path:
        return self.directory / "mask.nrrd"

    @property
    def output_path(self) -> Path:
        return self.directory / "output.nrrd"

    @property
    def uncertainty_path(self) -> Path:
        return self.directory / "uncertainty.nrrd"

    def cleanup(self) -> None:
        """Delete the folder and everything in it (never fails: a leftover temp folder is harmless)."""
        shutil.rmtree(self.directory, ignore_errors=True)
