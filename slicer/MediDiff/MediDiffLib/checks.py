"""Checks of the input volume and of the inpainting mask, on plain facts read from the Slicer nodes.

The module reads the node's class name, component count, dimensions and IJK-to-RAS matrix and hands them here;
the decisions (and their messages) are Slicer-free and unit-tested. No geometry is computed or converted: the
volumes travel to medidiff as NRRD files that carry their own geometry, and back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from MediDiffLib.errors import InputVolumeError, MaskError, format_size, message

SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"
LABEL_MAP_CLASS = "vtkMRMLLabelMapVolumeNode"
# Vector, diffusion and tensor volumes derive from the scalar volume class in MRML; these names make messages
# say what the volume is.
_KIND_BY_CLASS = {
    "vtkMRMLVectorVolumeNode": "a vector or colour volume",
    "vtkMRMLMultiVolumeNode": "a multi-volume",
    "vtkMRMLDiffusionWeightedVolumeNode": "a diffusion-weighted volume",
    "vtkMRMLDiffusionTensorVolumeNode": "a diffusion tensor volume",
}
# Voxel positions that differ by less than this (in mm) are the same geometry: NRRD stores text with ~1e-6
# relative precision, and segmentation export rounds origins.
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a volume's voxels are.

    Attributes:
        dimensions: voxel counts along I, J, K.
        ijk_to_ras: the 4×4 IJK-to-RAS matrix, row by row.
    """

    dimensions: tuple[int, int, int]
    ijk_to_ras: tuple[tuple[float, ...], ...]

    @classmethod
    def from_values(cls, dimensions: Sequence[int], ijk_to_ras: Sequence[Sequence[float]]) -> VolumeGeometry:
        """Build from any sequences (for example a vtkImageData's dimensions and a nested list matrix)."""
        dims = tuple(int(d) for d in dimensions)
        matrix = tuple(tuple(float(v) for v in row) for row in ijk_to_ras)
        if len(dims) != 3 or len(matrix) != 4 or any(len(row) != 4 for row in matrix):
            raise ValueError("a volume geometry needs 3 dimensions and a 4×4 matrix")
        return cls((dims[0], dims[1], dims[2]), matrix)

    def ras_of(self, ijk: Sequence[float]) -> tuple[float, float, float]:
        """RAS position (mm) of the voxel index ``ijk``."""
        point = (float(ijk[0]), float(ijk[1]), float(ijk[2]), 1.0)
        ras = [sum(self.ijk_to_ras[r][c] * point[c] for c in range(4)) for r in range(3)]
        return ras[0], ras[1], ras[2]


def check_input_volume(
    name: str, class_name: str, components: int | None, dimensions: Sequence[int] | None
) -> None:
    """Check that a volume can be restored: one scalar component, 3D, with image data.

    Args:
        name: the node's name, for messages.
        class_name: the node's MRML class name (``node.GetClassName()``).
        components: the image's scalar component count, or ``None`` if it has no image data.
        dimensions: the image's dimensions, or ``None`` if it has no image data.

    Raises:
        InputVolumeError: with the message to show.
    """
    if class_name == LABEL_MAP_CLASS:
        raise InputVolumeError(message("label_map_input", name=name))
    if class_name != SCALAR_VOLUME_CLASS:
        kind = _KIND_BY_CLASS.get(class_name, class_name)
        raise InputVolumeError(message("not_scalar", name=name, kind=kind))
    if components is None or dimensions is None:
        raise InputVolumeError(message("no_image_data", name=name))
    if components != 1:
        raise InputVolumeError(message("not_scalar", name=name, kind=f"{components} components per voxel"))
    if len(dimensions) != 3 or min(dimensions) < 1:
        raise InputVolumeError(message("no_image_data", name=name))
    if min(dimensions) < 2:  # a single slice (2D image), a line or a voxel
        raise InputVolumeError(message("not_3d", name=name, size=format_size(dimensions)))


def geometry_difference(
    reference: VolumeGeometry, other: VolumeGeometry, tolerance_mm: float = GEOMETRY_TOLERANCE_MM
) -> str | None:
    """Describe how ``other`` differs from ``reference``, or return ``None`` when they match.

    Two volumes match when they have the same dimensions and every voxel lies at the same RAS position within
    ``tolerance_mm``; it is enough to compare the eight corners because the mapping is affine.
    """
    if reference.dimensions != other.dimensions:
        return f"size {format_size(other.dimensions)} instead of {format_size(reference.dimensions)}"
    # Volume matrices are affine (last row 0 0 0 1); anything else is not a grid this check understands.
    if reference.ijk_to_ras[3] != other.ijk_to_ras[3]:
        return "a non-affine IJK-to-RAS matrix"
    ni, nj, nk = (d - 1 for d in reference.dimensions)
    worst = 0.0
    for ijk in ((i, j, k) for i in (0, ni) for j in (0, nj) for k in (0, nk)):
        a, b = reference.ras_of(ijk), other.ras_of(ijk)
        worst = max(worst, math.dist(a, b))
    if worst > tolerance_mm:
        return f"voxels up to {worst:.3g} mm away from the input's"
    return None


def check_mask_geometry(
    mask_name: str,
    volume_name: str,
    reference: VolumeGeometry,
    mask: VolumeGeometry,
    same_transform: bool = True,
) -> None:
    """Check that a label-map mask lies on the input volume's voxel grid.

    Args:
        mask_name: the mask node's name, for messages.
        volume_name: the input node's name, for messages.
        reference: the input volume's geometry.
        mask: the mask's geometry.
        same_transform: whether both nodes are under the same parent transform (or none).

    Raises:
        MaskError: the grids differ.
    """
    if not same_transform:
        raise MaskError(message("mask_transform", mask=mask_name, volume=volume_name))
    difference = geometry_difference(reference, mask)
    if difference is not None:
        raise MaskError(message("mask_geometry", mask=mask_name, volume=volume_name, difference=difference))


def check_mask_not_empty(mask_name: str, nonzero_voxels: int) -> None:
    """Raise :class:`MaskError` when the mask marks no voxel (inpainting would change nothing)."""
    if nonzero_voxels <= 0:
        raise MaskError(message("mask_empty", name=mask_name))
