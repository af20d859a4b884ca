"""The :class:`Volume`: one 3D scan with its geometry, the currency of medidiff."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Volume:
    """A 3D scalar volume in nibabel's convention.

    Attributes:
        data: array of shape (I, J, K), voxel values in the scan's own units (dtype as read).
        affine: (4, 4) float64 voxel-index -> RAS millimetre transform.
        meta: free-form metadata (``modality``, ``series_description``, ``series_uid``, ``dicom_headers``
            for DICOM inputs, ``nifti_header`` for NIfTI inputs, ...). Writers use it to keep identity.
        source: human-readable description of where the data came from (path, series UID).
    """

    data: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3D (I, J, K), got shape {self.data.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along I, J, K (column norms of the affine)."""
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(s[0]), float(s[1]), float(s[2])

    @property
    def orientation(self) -> str:
        """Three-letter RAS orientation code, e.g. ``"RAS"`` or ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def with_data(self, data: np.ndarray, **meta_updates: Any) -> Volume:
        """A copy with new voxel data (same shape and geometry) and optionally updated metadata."""
        if data.shape != self.data.shape:
            raise ValueError(f"with_data expects shape {self.data.shape}, got {data.shape}")
        return replace(self, data=data, meta={**self.meta, **meta_updates})
