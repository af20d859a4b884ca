"""Affine conventions at the file edge: DICOM/ITK LPS <-> medidiff RAS.

medidiff's :class:`~medidiff.io.volume.Volume` uses a 4×4 voxel-index -> RAS millimetre affine. DICOM and
ITK/SimpleITK describe the same geometry in LPS (x to the patient's left, y to the posterior), with ITK
splitting it into origin, spacing and a direction matrix. These are the only conversions between the two;
nothing outside ``medidiff.io`` (and the Slicer module) should know about LPS.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# Flipping x and y maps LPS to RAS and back (the map is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a (4, 4) voxel -> LPS affine to voxel -> RAS."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def ras_to_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a (4, 4) voxel -> RAS affine to voxel -> LPS."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def affine_from_itk(origin: ArrayLike, spacing: ArrayLike, direction: ArrayLike) -> np.ndarray:
    """RAS affine (4, 4) of a 3D ITK image from LPS origin (3,), spacing (3,) and row-major direction (9,)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return lps_to_ras(lps)


def itk_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Split a (4, 4) RAS affine into ITK's LPS origin (3,), spacing (3,) and row-major direction (9,).

    The direction columns are the normalised affine columns; a sheared affine keeps its shear in the
    (then non-orthogonal) direction matrix, which NRRD and MetaImage can store.
    """
    lps = ras_to_lps(affine)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
    direction = columns / spacing
    return (
        tuple(float(v) for v in lps[:3, 3]),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def dicom_plane_geometry(affine: np.ndarray) -> tuple[list[float], list[float]]:
    """DICOM Image Plane attributes shared by the slices of an (I, J, K) volume with this RAS affine.

    A slice is stored with rows along J and columns along I (pixel (row=j, column=i)).

    Returns:
        ``(image_orientation, pixel_spacing)``: ImageOrientationPatient (6,) = the LPS unit vectors of I
        (along a row) then J (down a column); PixelSpacing (2,) = [J spacing, I spacing] (DICOM puts the
        spacing between rows first).
    """
    lps = ras_to_lps(affine)
    col_i, col_j = lps[:3, 0], lps[:3, 1]
    spacing_i, spacing_j = float(np.linalg.norm(col_i)), float(np.linalg.norm(col_j))
    orientation = [*(col_i / spacing_i).tolist(), *(col_j / spacing_j).tolist()]
    return orientation, [spacing_j, spacing_i]


def slice_positions(affine: np.ndarray, n_slices: int) -> np.ndarray:
    """LPS ImagePositionPatient (n_slices, 3) of slices k = 0..n_slices-1 of a volume with this RAS affine."""
    lps = ras_to_lps(affine)
    return lps[:3, 3][None, :] + np.arange(n_slices)[:, None] * lps[:3, 2][None, :]


def reader_meta(array: np.ndarray, affine: np.ndarray, spacing: ArrayLike | None = None) -> dict[str, object]:
    """The metadata keys MONAI's ``ImageReader.get_data`` returns, for an (I, J, K[, C]) array in RAS.

    ``spacing`` defaults to the affine's column norms; ``original_channel_dim`` is -1 (a trailing axis) for a
    4D array and NaN (no channel) for a 3D one, as MONAI's own readers report it. Also ``medidiff_dtype``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    return {
        "affine": affine,
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(array.shape[:3]),
        "original_channel_dim": float("nan") if array.ndim == 3 else -1,
        "space": "RAS",
        "spacing": np.asarray(
            np.linalg.norm(affine[:3, :3], axis=0) if spacing is None else spacing, dtype=np.float64
        ),
        "medidiff_dtype": str(array.dtype),
    }
